//! Access tokens as a stranger sends them: the QUIC preamble, the
//! `authorization` header and the token text, checked against a fixed
//! key. Never a panic; nothing but a token that key signed is granted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vantage_tls::access::{read_token, AccessKeys};
use vantage_wire::access::{bearer_token, decode_preamble_head, decode_token, PREAMBLE_HEAD_LEN};

/// SHA-256 of a phrase, taken as a public key: no one has a private half
/// for it, so no input may be granted.
const KEY: &str = "67f25acb00fa91543bff86751f5a74aaad752a1e8a694923e13c8a098d30e8bd\n";

fuzz_target!(|bytes: &[u8]| {
    static KEYS: OnceLock<AccessKeys> = OnceLock::new();
    let keys = KEYS.get_or_init(|| AccessKeys::parse(KEY, "fuzz").expect("the fixed key parses"));
    if let Ok(len) = decode_preamble_head(bytes) {
        if let Some(token) = bytes.get(PREAMBLE_HEAD_LEN..PREAMBLE_HEAD_LEN + len) {
            if let Ok(token) = decode_token(token) {
                assert!(keys.check(token, 0).is_err());
            }
        }
    }
    if let Some(token) = bearer_token(bytes) {
        assert!(keys.check(token, 0).is_err());
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(grant) = read_token(text) {
            assert!(!grant.probe.is_empty() && grant.probe.len() <= 64);
        }
        assert!(keys.check(text, 0).is_err());
        let _ = AccessKeys::parse(text, "fuzz");
    }
});
