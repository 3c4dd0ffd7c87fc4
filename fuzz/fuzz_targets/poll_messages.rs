//! A probe's campaign poll (token, then heartbeat text) and the collector's
//! answer: never a panic, and an accepted heartbeat or answer round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vantage_wire::campaign::{decode_poll, encode_poll, CampaignAnswer, Heartbeat};

fuzz_target!(|bytes: &[u8]| {
    if let Ok((token, rest)) = decode_poll(bytes) {
        if let Ok(beat) = Heartbeat::decode(rest) {
            let again = encode_poll(token, &beat);
            let (token2, rest2) = decode_poll(&again).expect("an encoded poll decodes");
            assert_eq!(token2, token);
            assert_eq!(Heartbeat::decode(rest2).as_ref(), Ok(&beat));
        }
    }
    if let Ok(beat) = Heartbeat::decode(bytes) {
        assert_eq!(
            Heartbeat::decode(beat.encode().as_bytes()).as_ref(),
            Ok(&beat)
        );
    }
    if let Ok(answer) = CampaignAnswer::decode(bytes) {
        assert_eq!(
            CampaignAnswer::decode(answer.encode().as_bytes()),
            Ok(answer)
        );
    }
});
