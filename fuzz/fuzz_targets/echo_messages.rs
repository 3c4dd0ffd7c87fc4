//! The QUIC echo protocol's request and response headers: never a panic,
//! and what decodes round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vantage_wire::echo::{EchoRequest, EchoResponse};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(r) = EchoRequest::decode(bytes) {
        assert_eq!(EchoRequest::decode(&r.encode()), Ok(r));
    }
    if let Ok(r) = EchoResponse::decode(bytes) {
        assert_eq!(EchoResponse::decode(&r.encode()), Ok(r));
    }
});
