//! Photo sync's request and reply headers: never a panic, and what decodes
//! round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vantage_wire::photo::{PhotoReply, PhotoRequest};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(r) = PhotoRequest::decode(bytes) {
        assert_eq!(PhotoRequest::decode(&r.encode()), Ok(r));
    }
    if let Ok(r) = PhotoReply::decode(bytes) {
        assert_eq!(PhotoReply::decode(&r.encode()), Ok(r));
    }
});
