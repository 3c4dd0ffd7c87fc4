//! What a photo-sync batch moves: which photos, which way, how large.
//! Plain code: randomness comes from a seeded generator, so a seed gives
//! the same batches and tests need no sockets.

use crate::config::{PhotoSizes, PhotoSyncConfig, SyncDirection};
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, LogNormal};

/// Which way one photo goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Phone to data centre.
    Upload,
    /// Data centre to phone.
    Download,
}

/// One photo of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhotoJob {
    /// Which way.
    pub leg: Leg,
    /// Bytes.
    pub size: u64,
    /// Seed of its bytes ([`vantage_wire::photo::PhotoBytes`]).
    pub seed: u64,
}

/// Draws one photo size.
pub fn draw_size(sizes: &PhotoSizes, rng: &mut StdRng) -> u64 {
    if sizes.sigma <= 0.0 {
        return sizes.median_bytes.clamp(sizes.min_bytes, sizes.max_bytes);
    }
    let mu = (sizes.median_bytes.max(1) as f64).ln();
    match LogNormal::new(mu, sizes.sigma) {
        Ok(d) => (d.sample(rng).round() as u64).clamp(sizes.min_bytes, sizes.max_bytes),
        Err(_) => sizes.median_bytes,
    }
}

/// The photos of one batch, in the order they are sent. With
/// [`SyncDirection::Both`] each photo is uploaded and then, later in the
/// batch, downloaded.
pub fn plan_batch(config: &PhotoSyncConfig, rng: &mut StdRng) -> Vec<PhotoJob> {
    let photos: Vec<(u64, u64)> = (0..config.photos)
        .map(|_| (draw_size(&config.sizes, rng), rng.gen()))
        .collect();
    let job = |leg, (size, seed): (u64, u64)| PhotoJob { leg, size, seed };
    match config.direction {
        SyncDirection::Upload => photos.into_iter().map(|p| job(Leg::Upload, p)).collect(),
        SyncDirection::Download => photos.into_iter().map(|p| job(Leg::Download, p)).collect(),
        SyncDirection::Both => photos
            .iter()
            .map(|&p| job(Leg::Upload, p))
            .chain(photos.iter().map(|&p| job(Leg::Download, p)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn default_sizes_look_like_phone_photos() {
        let sizes = PhotoSizes::phone_camera();
        let mut rng = StdRng::seed_from_u64(7);
        let mut drawn: Vec<u64> = (0..10_000).map(|_| draw_size(&sizes, &mut rng)).collect();
        drawn.sort_unstable();
        let median = drawn[drawn.len() / 2] as f64;
        assert!((median / 3e6 - 1.0).abs() < 0.03, "median {median}");
        let p90 = drawn[drawn.len() * 9 / 10] as f64;
        // exp(1.2816 * 0.3) = 1.47: the log-normal's p90 over its median.
        assert!(
            (p90 / median - 1.47).abs() < 0.05,
            "p90/median {}",
            p90 / median
        );
        assert!(drawn
            .iter()
            .all(|&s| (sizes.min_bytes..=sizes.max_bytes).contains(&s)));
    }

    #[test]
    fn both_directions_download_what_was_uploaded() {
        let config = PhotoSyncConfig {
            photos: 4,
            direction: SyncDirection::Both,
            ..PhotoSyncConfig::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        let plan = plan_batch(&config, &mut rng);
        assert_eq!(plan.len(), 8);
        for i in 0..4 {
            assert_eq!(plan[i].leg, Leg::Upload);
            assert_eq!(plan[i + 4].leg, Leg::Download);
            assert_eq!(
                (plan[i].size, plan[i].seed),
                (plan[i + 4].size, plan[i + 4].seed)
            );
        }
        let again = plan_batch(&config, &mut StdRng::seed_from_u64(1));
        assert_eq!(plan, again, "a seed gives the same batch");
    }

    #[test]
    fn fixed_sizes_are_exact() {
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(draw_size(&PhotoSizes::fixed(1234), &mut rng), 1234);
    }
}
