//! STAMP, both sides: the sender's and the reflector's packet decoders never
//! panic, accepted packets round-trip, and a reflection is exactly as long
//! as the test packet (no amplification) and carries its sequence back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vantage_wire::stamp::{reflect, ErrorEstimate, NtpTimestamp, ReflectorPacket, SenderPacket};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(p) = SenderPacket::decode(bytes) {
        assert_eq!(SenderPacket::decode(&p.encode()), Ok(p));
        let t = NtpTimestamp::from_unix(std::time::Duration::from_secs(1_700_000_000));
        let out = reflect(bytes, 7, t, t, ErrorEstimate::UNSYNCHRONIZED, 64)
            .expect("a packet that decodes is reflected");
        assert_eq!(out.len(), bytes.len());
        let back = ReflectorPacket::decode(&out).expect("a reflection decodes");
        assert_eq!(back.sender_sequence, p.sequence);
        assert_eq!(back.sender_timestamp, p.timestamp);
    } else {
        let t = NtpTimestamp::default();
        assert!(reflect(bytes, 0, t, t, ErrorEstimate::UNSYNCHRONIZED, 64).is_err());
    }
    if let Ok(p) = ReflectorPacket::decode(bytes) {
        assert_eq!(ReflectorPacket::decode(&p.encode()), Ok(p));
    }
});
