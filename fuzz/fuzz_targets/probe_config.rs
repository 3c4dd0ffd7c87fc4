//! A probe's `--config` file: any text gives a configuration or an error,
//! never a panic, through parsing, its layer and resolution.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vantage_probe::config::{resolve, ConfigFile};

fuzz_target!(|text: &str| {
    let Ok(file) = toml::from_str::<ConfigFile>(text) else {
        return;
    };
    let Ok(layer) = file.layer() else {
        return;
    };
    let _ = resolve(&[&layer]);
});
