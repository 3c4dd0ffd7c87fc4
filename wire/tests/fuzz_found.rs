//! Inputs the fuzz targets found, kept as plain regression tests so that
//! `cargo test` (overflow checks on) replays them without cargo-fuzz.

use vantage_wire::campaign::{decode_poll, Heartbeat};

/// `poll_messages`: a CR inside a heartbeat's value did not read back the
/// same after encoding (the encoder folds it to a space).
#[test]
fn a_heartbeat_with_a_carriage_return_round_trips() {
    let bytes: &[u8] = &[
        86, 78, 84, 67, 1, 7, 118, 0, 0, 0, 60, 101, 100, 112, 114, 111, 98, 101, 32, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 13, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 105, 110, 109, 48, 10, 115, 111, 102, 116, 119, 97, 114, 101, 32, 46, 48, 10, 49,
        57, 57, 10, 108, 97, 98, 101, 108, 32, 99, 111, 117, 110, 116, 122, 121, 61, 73, 78, 10,
    ];
    let (_, rest) = decode_poll(bytes).expect("the found poll decodes");
    let beat = Heartbeat::decode(rest).expect("its heartbeat decodes");
    assert_eq!(Heartbeat::decode(beat.encode().as_bytes()), Ok(beat));
}
