//! What a run measures, made ready: targets resolved (and the in-process
//! responder of `--local` started), each pinned certificate checked once,
//! and the per-target contexts the measurement tasks share.

use super::RunError;
use crate::config::{ProbeConfig, TargetConfig};
use crate::measure::{self, Event, HttpCtx, TargetCtx};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use vantage_responder::{Responder, ResponderConfig, ResponderError};
use vantage_tls::{TlsClient, Trust};
use vantage_wire::echo::{self, EchoRequest};

pub(crate) struct ResolvedTarget {
    pub(crate) config: TargetConfig,
    pub(crate) quic: SocketAddr,
    pub(crate) https: SocketAddr,
    pub(crate) stamp: SocketAddr,
}

async fn resolve(t: &TargetConfig, port: u16) -> Result<SocketAddr, RunError> {
    let err = |reason: String| RunError::Resolve {
        target: t.name.clone(),
        host: t.host.clone(),
        reason,
    };
    tokio::net::lookup_host((t.host.as_str(), port))
        .await
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".into()))
}

/// Checks each pinned target's certificate once before measuring, so a
/// wrong `--pin` stops the run with a clear message instead of filling
/// every series with TLS errors. An unreachable target only warns: it is
/// measured (and its failures counted) like any other.
async fn preflight(t: &ResolvedTarget, tls: &TlsClient) -> Result<(), RunError> {
    let Some(Trust::Pinned(pins)) = &t.config.trust else {
        return Ok(());
    };
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(t.https).await?;
        let name = rustls::pki_types::ServerName::try_from(t.config.server_name.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        tokio_rustls::TlsConnector::from(tls.config.clone())
            .connect(name, tcp)
            .await?;
        Ok::<_, std::io::Error>(())
    };
    let result = tokio::time::timeout(Duration::from_secs(5), attempt).await;
    if let Some(presented) = tls.pin_mismatch() {
        return Err(RunError::PinMismatch {
            target: t.config.name.clone(),
            address: t.https,
            presented,
            expected: pins
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" or "),
        });
    }
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(target = %t.config.name, address = %t.https, error = %e, "target not reachable yet; measuring anyway, failures are counted")
        }
        Err(_) => {
            tracing::warn!(target = %t.config.name, address = %t.https, "target did not answer within 5 s; measuring anyway, failures are counted")
        }
    }
    Ok(())
}

/// Every target of `config` resolved, `--local`'s responder first (started
/// here, and returned so the run can stop it).
pub(crate) async fn resolve_all(
    config: &ProbeConfig,
) -> Result<(Vec<ResolvedTarget>, Option<Responder>), RunError> {
    let mut targets_cfg = config.targets.clone();
    let mut resolved = Vec::new();
    let mut local_responder = None;
    if config.local {
        let responder =
            Responder::start(ResponderConfig::local().map_err(ResponderError::from)?).await?;
        resolved.push(ResolvedTarget {
            config: TargetConfig {
                name: "local".into(),
                host: "127.0.0.1".into(),
                port: responder.quic_addr().port(),
                stamp_port: responder.stamp_addr().port(),
                server_name: "localhost".into(),
                trust: Some(Trust::Pinned(vec![responder.fingerprint()])),
                // In this process: the same clock.
                shared_clock: true,
            },
            quic: responder.quic_addr(),
            https: responder.https_addr(),
            stamp: responder.stamp_addr(),
        });
        local_responder = Some(responder);
    }
    for t in targets_cfg.drain(..) {
        let quic = resolve(&t, t.port).await?;
        let stamp = SocketAddr::new(quic.ip(), t.stamp_port);
        resolved.push(ResolvedTarget {
            https: quic,
            quic,
            stamp,
            config: t,
        });
    }
    Ok((resolved, local_responder))
}

/// The shared context of each responder target's measurements, after its
/// pin is checked.
pub(crate) async fn target_contexts(
    config: &ProbeConfig,
    resolved: &[ResolvedTarget],
    events_tx: &mpsc::Sender<Event>,
    sync_gate: &Arc<AtomicUsize>,
) -> Result<Vec<Arc<TargetCtx>>, RunError> {
    let mut contexts = Vec::new();
    for (index, t) in resolved.iter().enumerate() {
        let trust_err = |source| RunError::Trust {
            target: t.config.name.clone(),
            source,
        };
        // Without a trust no TLS metric runs (the configuration says so);
        // the clients are still made, pinned to nothing, so any TLS
        // connection would fail closed rather than go unverified.
        let trust = t.config.trust.clone().unwrap_or(Trust::Pinned(Vec::new()));
        let https_tls = TlsClient::new(&trust, &[b"http/1.1"]).map_err(trust_err)?;
        let quic_tls = TlsClient::new(&trust, &[echo::ALPN]).map_err(trust_err)?;
        preflight(t, &https_tls).await?;
        let endpoint =
            measure::quic_client_endpoint(&quic_tls, t.quic).map_err(|reason| RunError::Quic {
                target: t.config.name.clone(),
                reason,
            })?;
        contexts.push(Arc::new(TargetCtx {
            index,
            quic_addr: t.quic,
            https_addr: t.https,
            stamp_addr: t.stamp,
            shared_clock: t.config.shared_clock,
            one_way: config
                .metrics
                .iter()
                .any(|m| crate::config::ONE_WAY_METRICS.contains(m)),
            server_name: t.config.server_name.clone(),
            https_tls,
            endpoint,
            timeout: config.timeout,
            request: EchoRequest {
                response_len: config.response_bytes,
                padding_len: config.request_bytes,
            },
            events: events_tx.clone(),
            warm_quic: tokio::sync::Mutex::new(None),
            https_pool: Mutex::new(Vec::new()),
            sync_gate: sync_gate.clone(),
            access: config
                .access_token
                .as_deref()
                .and_then(measure::Access::new),
            access_refusal_reported: Default::default(),
        }));
    }
    Ok(contexts)
}

/// The shared context of each URL's measurements; their indices follow
/// the `first_index` responder targets.
pub(crate) fn http_contexts(
    config: &ProbeConfig,
    first_index: usize,
    events_tx: &mpsc::Sender<Event>,
    sync_gate: &Arc<AtomicUsize>,
) -> Result<Vec<Arc<HttpCtx>>, RunError> {
    let mut http_contexts = Vec::new();
    for (i, u) in config.urls.iter().enumerate() {
        let tls = TlsClient::for_web(&u.trust, measure::alpn_for(u.version)).map_err(|source| {
            RunError::Trust {
                target: u.name.clone(),
                source,
            }
        })?;
        let resolver = if u.host.parse::<std::net::IpAddr>().is_ok() {
            None
        } else {
            Some(
                measure::resolver(config.dns_server, config.timeout).map_err(|reason| {
                    RunError::Resolve {
                        target: u.name.clone(),
                        host: u.host.clone(),
                        reason,
                    }
                })?,
            )
        };
        http_contexts.push(Arc::new(measure::HttpCtx {
            index: first_index + i,
            target: u.clone(),
            resolver,
            tls,
            timeout: config.timeout,
            events: events_tx.clone(),
            sync_gate: sync_gate.clone(),
            warm: Mutex::new(Vec::new()),
            resolved: Mutex::new(None),
            quic: Mutex::new([None, None]),
            alt_svc_h3: Default::default(),
        }));
    }
    Ok(http_contexts)
}
