//! `udp_rtt`: a STAMP session-sender.

use super::{classify_io, Event, TargetCtx};
use crate::recorder::Outcome;
use crate::schedule::{latency_from, Schedule, TIMER_SLACK};
use crate::stamp_session::{OneWay, Reply, StampSender};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use vantage_wire::stamp::{ReflectorPacket, MAX_PACKET_LEN};
use vantage_wire::{ErrorClass, Metric};

async fn open_socket(peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if peer.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(peer).await?;
    Ok(socket)
}

fn wall() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The one-way metrics each STAMP attempt also feeds.
const ONE_WAY: [Metric; 3] = [
    Metric::UdpOwdForward,
    Metric::UdpOwdBackward,
    Metric::UdpOwdError,
];

/// Records an attempt's one-way delays: each way and the clocks' error
/// when they are synchronised, else `unsynchronized` for all three. The
/// forward delay is charged the send's lateness past the timer slack, as
/// the round trip is.
async fn emit_one_way(ctx: &TargetCtx, intended: Instant, started: Instant, one_way: OneWay) {
    if !ctx.one_way {
        return;
    }
    let late = latency_from(intended, started, started, TIMER_SLACK);
    let measured = |latency| Outcome::Measured {
        latency,
        server_time: None,
        bytes: 0,
    };
    match one_way {
        OneWay::Measured {
            forward,
            backward,
            error,
        } => {
            ctx.emit(Metric::UdpOwdForward, intended, measured(forward + late))
                .await;
            ctx.emit(Metric::UdpOwdBackward, intended, measured(backward))
                .await;
            ctx.emit(Metric::UdpOwdError, intended, measured(error))
                .await;
        }
        OneWay::Unsynchronized => {
            for m in ONE_WAY {
                ctx.emit(m, intended, Outcome::Failed(ErrorClass::Unsynchronized))
                    .await;
            }
        }
    }
}

/// Sends STAMP test packets on `schedule` and accounts for every one:
/// answered, duplicated, lost (after the timeout) or failed to send. Each
/// attempt counts under `udp_rtt` and the one-way metrics alike.
pub(crate) async fn udp_rtt_job(
    ctx: Arc<TargetCtx>,
    mut schedule: Schedule,
    mut stop: watch::Receiver<bool>,
) {
    const M: Metric = Metric::UdpRtt;
    let mut session = StampSender::new(ctx.timeout, ctx.shared_clock);
    let mut clock = vantage_responder::ClockEstimate::default();
    // The metrics each attempt counts under: the one-way ones only when
    // asked for.
    let counted: &[Metric] = if ctx.one_way {
        &[M, ONE_WAY[0], ONE_WAY[1], ONE_WAY[2]]
    } else {
        &[M]
    };
    let mut socket: Option<UdpSocket> = None;
    let mut buf = vec![0u8; MAX_PACKET_LEN + 1];
    let far = || Instant::now() + Duration::from_secs(3600);
    let mut stopping = false;
    loop {
        if stopping && session.in_flight() == 0 {
            break;
        }
        let next_send = if stopping { far() } else { schedule.next_due() };
        let next_expiry = session.next_expiry().unwrap_or_else(far);
        tokio::select! {
            biased;
            received = async {
                match &socket {
                    Some(s) => s.recv(&mut buf).await,
                    None => std::future::pending().await,
                }
            } => {
                let now = Instant::now();
                match received {
                    Ok(n) => match ReflectorPacket::decode(&buf[..n]) {
                        Ok(reply) => match session.on_reply(&reply, now, wall()) {
                            Reply::Answered { intended, started, reflector_time, path, one_way } => {
                                let latency = latency_from(intended, started, now, TIMER_SLACK);
                                ctx.emit(M, intended, Outcome::Measured { latency, server_time: Some(reflector_time), bytes: n as u64 }).await;
                                emit_one_way(&ctx, intended, started, one_way).await;
                                if path != Default::default() {
                                    let _ = ctx.events.send(Event::Path { target: ctx.index, metric: M, intended, delta: path }).await;
                                }
                            }
                            Reply::Duplicate { intended } => {
                                let delta = vantage_wire::PathStats { duplicates: 1, ..Default::default() };
                                let _ = ctx.events.send(Event::Path { target: ctx.index, metric: M, intended, delta }).await;
                            }
                            Reply::Unexpected => tracing::debug!("STAMP reply for no packet in flight (late or foreign)"),
                        },
                        Err(e) => tracing::debug!(error = %e, "malformed STAMP reply ignored"),
                    },
                    // ICMP port unreachable from an earlier packet: the
                    // packets in flight will time out and be counted lost.
                    Err(e) => tracing::debug!(error = %e, "STAMP receive error"),
                }
            }
            _ = tokio::time::sleep_until(next_expiry.into()) => {
                for intended in session.poll_expired(Instant::now()) {
                    for &m in counted {
                        ctx.emit(m, intended, Outcome::Lost).await;
                    }
                }
            }
            _ = tokio::time::sleep_until(next_send.into()), if !stopping => {
                let now = Instant::now();
                while let Some(intended) = schedule.poll_due(now) {
                    if ctx.syncing() {
                        continue;
                    }
                    if socket.is_none() {
                        match open_socket(ctx.stamp_addr).await {
                            Ok(s) => socket = Some(s),
                            Err(e) => {
                                for &m in counted {
                                    ctx.emit_error(m, intended, classify_io(&e), &e).await;
                                }
                                continue;
                            }
                        }
                    }
                    let Some(s) = &socket else { continue };
                    let estimate = clock.at(now);
                    let started = Instant::now();
                    let packet = session.on_send(intended, started, (wall(), estimate));
                    if let Err(e) = s.send(&packet.encode()).await {
                        session.on_send_failed(packet.sequence);
                        let class = classify_io(&e);
                        for &m in counted {
                            ctx.emit_error(m, intended, class, &e).await;
                        }
                        if class != ErrorClass::Refused {
                            socket = None;
                        }
                    }
                }
            }
            _ = stop.changed(), if !stopping => stopping = true,
        }
    }
}
