//! One task per (target, measurement), each on its own schedule.

use crate::config::{Measurement, ProbeConfig};
use crate::measure::{self, HttpCtx, TargetCtx};
use crate::schedule::Schedule;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tokio::task::JoinSet;
use vantage_wire::Metric;

/// Starts every measurement task of `config`, schedules counting from
/// `start`, each seeded from `seed` in turn; they end when `stop` turns true.
pub(crate) fn spawn(
    config: &ProbeConfig,
    contexts: &[Arc<TargetCtx>],
    http_contexts: &[Arc<HttpCtx>],
    start: Instant,
    mut seed: u64,
    jobs_stop_rx: &watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut jobs = JoinSet::new();
    for ctx in http_contexts {
        for (&measurement, &spacing) in &config.schedules {
            let schedule = Schedule::new(spacing, start, next_seed(&mut seed));
            let (ctx, stop) = (ctx.clone(), jobs_stop_rx.clone());
            match measurement {
                Measurement::HttpCold => {
                    const M: &[Metric] = crate::config::HTTP_METRICS.split_at(6).0;
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        M,
                        measure::http_cold,
                    ));
                }
                Measurement::HttpWarm => {
                    const M: &[Metric] = crate::config::HTTP_METRICS.split_at(6).1;
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        M,
                        measure::http_warm,
                    ));
                }
                Measurement::PathTrace => {
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        &[Metric::PathTrace],
                        measure::path_trace_url,
                    ));
                }
                _ => {}
            }
        }
    }
    for ctx in contexts {
        for (&measurement, &spacing) in &config.schedules {
            let schedule = Schedule::new(spacing, start, next_seed(&mut seed));
            let (ctx, stop) = (ctx.clone(), jobs_stop_rx.clone());
            match measurement {
                Measurement::UdpRtt => {
                    jobs.spawn(measure::udp_rtt_job(ctx, schedule, stop));
                }
                Measurement::QuicCold => {
                    const M: &[Metric] = &[Metric::QuicHandshake, Metric::QuicColdRequest];
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        M,
                        measure::quic_cold,
                    ));
                }
                Measurement::QuicRequest => {
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        &[Metric::QuicRequest],
                        measure::quic_warm,
                    ));
                }
                Measurement::TcpCold => {
                    const M: &[Metric] = &[Metric::TcpConnect, Metric::TlsHandshake];
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        M,
                        measure::tcp_cold,
                    ));
                }
                Measurement::HttpsRequest => {
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        &[Metric::HttpsRequest],
                        measure::https_request,
                    ));
                }
                Measurement::HttpCold | Measurement::HttpWarm => {}
                Measurement::PathTrace => {
                    jobs.spawn(measure::run_scheduled(
                        ctx,
                        schedule,
                        stop,
                        &[Metric::PathTrace],
                        measure::path_trace,
                    ));
                }
                Measurement::PhotoSync => {
                    // Targets take turns: each one's batches are offset by
                    // its share of the interval, so two syncs never overlap
                    // while both fit in their share.
                    let offset =
                        config.sync.every / contexts.len().max(1) as u32 * ctx.index as u32;
                    jobs.spawn(measure::photosync_job(
                        ctx,
                        config.sync.clone(),
                        start + offset,
                        seed,
                        stop,
                    ));
                }
            }
        }
    }
    jobs
}

/// Each schedule's own seed, drawn from the run's (an LCG step), so two
/// measurements never share their random spacing.
fn next_seed(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed
}
