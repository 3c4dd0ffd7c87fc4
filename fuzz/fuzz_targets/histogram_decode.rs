//! The histogram decoders never panic (the hdrhistogram deserializer is
//! reached only with counts it can take), and what they accept round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vantage_wire::{
    decode_histogram, decode_histogram_plain, encode_histogram, same_counts, SparseCounts,
};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(h) = decode_histogram(bytes) {
        let mut out = Vec::new();
        encode_histogram(&h, &mut out).expect("a decoded histogram encodes");
        let again = decode_histogram(&out).expect("an encoded histogram decodes");
        assert!(same_counts(&again, &h));
    }
    if let Ok((h, plain)) = decode_histogram_plain(bytes) {
        let again = decode_histogram(&plain).expect("the plain bytes decode");
        assert!(same_counts(&again, &h));
    }
    if let Ok(sparse) = SparseCounts::decode(bytes) {
        let total = sparse.iter().try_fold(0u64, |t, (_, n)| t.checked_add(n));
        assert_eq!(total, Some(sparse.total()), "decoded counts sum within u64");
        let mut out = Vec::new();
        sparse.encode_plain(&mut out);
        let again = SparseCounts::decode(&out).expect("encoded counts decode");
        assert_eq!(again.total(), sparse.total());
    }
});
