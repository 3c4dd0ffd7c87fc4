//! A campaign's TOML as `vantage campaign set` checks it and a probe takes
//! it: never a panic, and a campaign that passes the check gives a layer
//! named after it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vantage_probe::config::{campaign_layer, check_campaign};

fuzz_target!(|text: &str| {
    let checked = check_campaign("fuzz", text);
    let layer = campaign_layer("fuzz", text);
    if checked.is_ok() {
        let layer = layer.expect("a campaign that passes the check has a layer");
        assert_eq!(layer.campaign.as_deref(), Some("fuzz"));
    }
});
