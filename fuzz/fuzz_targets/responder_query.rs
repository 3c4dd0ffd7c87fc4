//! The responder's query-string numbers (`/echo?bytes=N`,
//! `/photo?size=N&seed=S`): never a panic, and a number it reads is the
//! first occurrence's value, exactly.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vantage_responder::query_number;

fuzz_target!(|query: &str| {
    for name in ["bytes", "size", "seed"] {
        let first = query.split('&').find_map(|pair| {
            pair.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('='))
        });
        match query_number(query, name) {
            Ok(Some(n)) => assert_eq!(first.and_then(|v| v.parse::<u64>().ok()), Some(n)),
            Ok(None) => assert!(first.is_none()),
            Err(_) => assert!(first.is_some_and(|v| v.parse::<u64>().is_err())),
        }
    }
});
