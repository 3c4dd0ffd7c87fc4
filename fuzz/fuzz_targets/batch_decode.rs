//! `Batch::decode` (versions 1 to 4, histograms and traces included) never panics,
//! and a batch it accepts encodes to bytes that decode to the same batch.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vantage_wire::{decode_histogram, same_counts, Batch};

fuzz_target!(|bytes: &[u8]| {
    let Ok((batch, plain)) = Batch::decode_with_plain_histograms(bytes) else {
        return;
    };
    assert_eq!(plain.len(), batch.series.len());
    for (series, plain) in batch.series.iter().zip(&plain) {
        let again = decode_histogram(plain).expect("a plain histogram the decoder wrote decodes");
        assert!(same_counts(&again, &series.histogram));
    }
    let encoded = batch.encode().expect("a decoded batch encodes");
    let again = Batch::decode(&encoded).expect("an encoded batch decodes");
    assert_eq!(again, batch);
});
