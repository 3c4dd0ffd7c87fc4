//! The STAMP reflector's session table under any sequence of packets from
//! any peers at any times: never a panic, never more sessions than its
//! capacity, and each live session's reflector sequence counts up by one.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use vantage_responder::SessionTable;

#[derive(Arbitrary, Debug)]
struct Packet {
    peer: u8,
    after_ms: u16,
}

const CAPACITY: usize = 8;
const IDLE: Duration = Duration::from_secs(2);

fuzz_target!(|packets: Vec<Packet>| {
    let mut now = Instant::now();
    let mut table = SessionTable::new(CAPACITY, IDLE);
    let mut last: HashMap<u8, (u32, Instant)> = HashMap::new();
    for p in packets.into_iter().take(4096) {
        now += Duration::from_millis(u64::from(p.after_ms));
        match table.next_sequence(&p.peer, now) {
            Some(seq) => {
                match last.get(&p.peer) {
                    // Seen within the idle time: the session cannot have
                    // been forgotten, so the count goes on.
                    Some(&(prev, seen)) if now.duration_since(seen) < IDLE => {
                        assert_eq!(seq, prev.wrapping_add(1), "peer {}", p.peer);
                    }
                    Some(&(prev, _)) => assert!(seq == 0 || seq == prev.wrapping_add(1)),
                    None => assert_eq!(seq, 0),
                }
                last.insert(p.peer, (seq, now));
            }
            None => {
                // Refused only when every slot holds a live session.
                let live = last
                    .values()
                    .filter(|(_, seen)| now.duration_since(*seen) < IDLE)
                    .count();
                assert!(live >= CAPACITY, "refused with {live} live sessions");
                assert!(!last
                    .get(&p.peer)
                    .is_some_and(|(_, seen)| now.duration_since(*seen) < IDLE));
            }
        }
        assert!(table.len() <= CAPACITY);
    }
});
