//! A lab scenario file: any text gives a validated scenario or an error,
//! never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vantage_lab::Scenario;

fuzz_target!(|text: &str| {
    let _ = Scenario::parse(text);
});
