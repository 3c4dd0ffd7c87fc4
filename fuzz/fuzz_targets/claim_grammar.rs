//! The claim grammar (`IN quic_cold_request p50 decreases by >= 350ms`):
//! never a panic, and an accepted claim has a quantile strictly between 0
//! and 1 and only finite amounts, so no verdict is computed on NaN or ∞.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vantage_reports::claim::{Change, Claim};

fuzz_target!(|text: &str| {
    let Ok(claim) = text.parse::<Claim>() else {
        return;
    };
    assert!(claim.quantile > 0.0 && claim.quantile < 1.0, "{claim:?}");
    let amounts = match &claim.change {
        Change::DecreaseBy(_, v)
        | Change::IncreaseBy(_, v)
        | Change::DecreaseByFraction(_, v)
        | Change::IncreaseByFraction(_, v)
        | Change::Ratio(_, v) => [*v, *v],
        Change::RatioBetween(a, b) => {
            assert!(a <= b, "{claim:?}");
            [*a, *b]
        }
    };
    assert!(amounts.iter().all(|v| v.is_finite()), "{claim:?}");
    assert_eq!(claim.text.parse::<Claim>().ok(), Some(claim.clone()));
});
