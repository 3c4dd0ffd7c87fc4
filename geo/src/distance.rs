//! The physical floor on a round trip: light in fibre covers about two
//! thirds of its speed in vacuum, ~200 km per millisecond, so a round
//! trip to a site `d` km away takes at least `d / 100` ms. A measured
//! minimum below that says the address cannot be where the site map puts
//! it.

use std::time::Duration;

/// Mean Earth radius, km.
const EARTH_KM: f64 = 6371.0;

/// Light in fibre, km per second: two thirds of c.
const FIBRE_KM_PER_S: f64 = 299_792.458 * 2.0 / 3.0;

/// The great-circle distance between two points (degrees), km.
pub fn great_circle_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1) = (a.0.to_radians(), a.1.to_radians());
    let (la2, lo2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * EARTH_KM * h.sqrt().min(1.0).asin()
}

/// The least round trip over `km` of fibre, there and back.
pub fn least_round_trip(km: f64) -> Duration {
    Duration::from_secs_f64((2.0 * km.max(0.0)) / FIBRE_KM_PER_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mumbai_to_beijing_cannot_take_less_than_about_47_ms() {
        let (mumbai, beijing) = ((19.076, 72.877), (39.904, 116.407));
        let km = great_circle_km(mumbai, beijing);
        assert!((4700.0..4800.0).contains(&km), "{km} km");
        let least = least_round_trip(km);
        assert!(
            (Duration::from_millis(46)..Duration::from_millis(49)).contains(&least),
            "{least:?}"
        );
        assert_eq!(great_circle_km(mumbai, mumbai), 0.0);
        assert_eq!(least_round_trip(-5.0), Duration::ZERO);
    }
}
