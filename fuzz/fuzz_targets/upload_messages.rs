//! A batch upload's framing (token, then batch) and the collector's answer:
//! never a panic; the token length read from the head agrees with the full
//! decode; an accepted request or answer round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vantage_wire::upload::{decode_request, encode_request, token_len, Ack, HEAD_LEN};

fuzz_target!(|bytes: &[u8]| {
    if let Ok((token, batch)) = decode_request(bytes) {
        let n = token_len(&bytes[..HEAD_LEN]).expect("the head of a request that decodes reads");
        assert_eq!(n, token.len());
        assert_eq!(HEAD_LEN + n + batch.len(), bytes.len());
        assert_eq!(encode_request(token, batch), bytes);
    }
    if let Ok(ack) = Ack::decode(bytes) {
        if ack.reason.len() <= usize::from(u16::MAX) {
            assert_eq!(Ack::decode(&ack.encode()), Ok(ack));
        }
    }
});
