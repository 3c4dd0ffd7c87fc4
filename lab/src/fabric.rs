//! What joins a lab's probes to its responders, in either mode: relays on
//! loopback, or namespaces joined by the packet emulator. The rest of a
//! lab run (configurations, collector, summary) is the same in both; this
//! is where they differ.

use crate::delay_line::ReleaseClock;
use crate::link::{EmulatedPath, PathSpec, Upstream};
use crate::netns::{NetnsError, NsRuntime};
use crate::run::LabError;
use crate::scenario::Hop;
use crate::topology::{HostId, RunningTopology, Topology};
use crate::udp_relay::UdpRelay;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use vantage_responder::{Responder, ResponderConfig};

/// How the lab carries traffic between probes and responders, as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emulation {
    /// Namespaces when this process may make them, relays otherwise.
    #[default]
    Auto,
    /// Relays on loopback only.
    Relay,
    /// Namespaces only: fail when they cannot be made.
    Netns,
}

/// The mode a lab runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Relays on loopback: UDP packet by packet, TCP as a split proxy
    /// (the kernel's handshake never meets the path, so `tcp_connect` is
    /// not emulated).
    Relay,
    /// Each probe and responder in a network namespace of its own, every
    /// IP packet through the packet emulator.
    Netns,
}

impl Mode {
    /// The value of the `emulation` label of every series the lab writes.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Relay => "relay",
            Mode::Netns => "netns",
        }
    }

    /// One line for the user.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Relay => {
                "relay mode: loopback relays carry UDP packet by packet and TCP as a split \
                 proxy, so TCP's handshake and congestion control never meet the path"
            }
            Mode::Netns => {
                "namespace mode: every probe and responder in a network namespace of its own, \
                 every IP packet (TCP included) through the emulated path"
            }
        }
    }
}

/// Decides the mode: `Auto` falls back to relays, with the reason, when
/// namespaces cannot be made.
pub(crate) fn resolve(asked: Emulation) -> Result<(Mode, Option<String>), NetnsError> {
    match asked {
        Emulation::Relay => Ok((Mode::Relay, None)),
        Emulation::Netns => crate::netns::available().map(|()| (Mode::Netns, None)),
        Emulation::Auto => Ok(match crate::netns::available() {
            Ok(()) => (Mode::Netns, None),
            Err(e) => (Mode::Relay, Some(e.to_string())),
        }),
    }
}

/// One path a lab run needs: from a probe (by name) to a data centre.
pub(crate) struct Route {
    pub probe: String,
    pub dc: String,
    /// The whole path, as relay mode emulates it.
    pub spec: PathSpec,
    /// The routers along it (namespace mode only); a router of one name
    /// is one namespace, whatever paths cross it.
    pub hops: Vec<Hop>,
    /// The path cut at its routers, from the probe's end.
    pub segments: Vec<PathSpec>,
    pub seed: u64,
}

/// A router the lab made, for its `hops.csv`.
#[derive(Debug, Clone)]
pub(crate) struct LabRouter {
    pub addr: std::net::IpAddr,
    pub hop: Hop,
}

/// Where a probe reaches a data centre.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    /// QUIC and HTTPS.
    pub addr: SocketAddr,
    /// STAMP.
    pub stamp_port: u16,
}

struct NetnsParts {
    // Declared in the order they must go: relays and runtimes before the
    // namespaces they live in.
    collector_relays: Vec<UdpRelay>,
    probe_runtimes: BTreeMap<String, NsRuntime>,
    dc_runtimes: BTreeMap<String, NsRuntime>,
    probe_hosts: BTreeMap<String, HostId>,
    topology: RunningTopology,
    /// Releases the collector relays' datagrams, apart from the emulated
    /// paths' clock so their releases do not enter its lateness figures.
    control_clock: Arc<ReleaseClock>,
}

/// The running paths and responders of a lab.
pub(crate) struct Fabric {
    mode: Mode,
    responders: BTreeMap<String, Responder>,
    targets: BTreeMap<(String, String), Target>,
    relay_paths: Vec<EmulatedPath>,
    netns: Option<NetnsParts>,
    routers: Vec<LabRouter>,
}

fn relay_err(probe: &str, dc: &str) -> impl FnOnce(std::io::Error) -> LabError {
    let (country, datacenter) = (probe.to_string(), dc.to_string());
    move |source| LabError::Relay {
        country,
        datacenter,
        source,
    }
}

fn netns_err(e: NetnsError) -> LabError {
    LabError::Netns(e)
}

impl Fabric {
    /// Starts a responder for every data centre of `routes` and the paths
    /// to them, released by `clock`.
    pub(crate) async fn start(
        mode: Mode,
        routes: &[Route],
        clock: Arc<ReleaseClock>,
    ) -> Result<Fabric, LabError> {
        let mut dcs: Vec<&str> = routes.iter().map(|r| r.dc.as_str()).collect();
        dcs.sort();
        dcs.dedup();
        match mode {
            Mode::Relay => {
                let mut responders = BTreeMap::new();
                for dc in dcs {
                    let config = local_config(dc)?;
                    responders.insert(dc.to_string(), start_responder(dc, config).await?);
                }
                let mut fabric = Fabric {
                    mode,
                    responders,
                    targets: BTreeMap::new(),
                    relay_paths: Vec::new(),
                    netns: None,
                    routers: Vec::new(),
                };
                for r in routes {
                    let responder = &fabric.responders[&r.dc];
                    let upstream = Upstream {
                        quic: responder.quic_addr(),
                        https: responder.https_addr(),
                        stamp: responder.stamp_addr(),
                    };
                    let path = EmulatedPath::start(upstream, &r.spec, r.seed, clock.clone())
                        .map_err(relay_err(&r.probe, &r.dc))?;
                    let target = Target {
                        addr: SocketAddr::from(([127, 0, 0, 1], path.port())),
                        stamp_port: path.stamp_port(),
                    };
                    fabric
                        .targets
                        .insert((r.probe.clone(), r.dc.clone()), target);
                    fabric.relay_paths.push(path);
                }
                Ok(fabric)
            }
            Mode::Netns => Self::start_netns(routes, dcs, clock).await,
        }
    }

    async fn start_netns(
        routes: &[Route],
        dcs: Vec<&str>,
        clock: Arc<ReleaseClock>,
    ) -> Result<Fabric, LabError> {
        let mut topology = Topology::new().map_err(netns_err)?;
        let mut dc_hosts = BTreeMap::new();
        for dc in &dcs {
            let host = topology.add_host(&format!("dc-{dc}")).map_err(netns_err)?;
            dc_hosts.insert(dc.to_string(), host);
        }
        let mut probe_hosts = BTreeMap::new();
        // One namespace per router name: paths that name the same router
        // cross the same namespace.
        let mut router_hosts: BTreeMap<String, HostId> = BTreeMap::new();
        let mut routers = Vec::new();
        for r in routes {
            if !probe_hosts.contains_key(&r.probe) {
                let host = topology
                    .add_host(&format!("p-{}", r.probe))
                    .map_err(netns_err)?;
                probe_hosts.insert(r.probe.clone(), host);
            }
            let mut chain = Vec::new();
            for hop in &r.hops {
                let host = match router_hosts.get(&hop.name) {
                    Some(h) => *h,
                    None => {
                        let host = topology
                            .add_router(&format!("r-{}", hop.name), hop.silent)
                            .map_err(netns_err)?;
                        routers.push(LabRouter {
                            addr: topology.addr(host),
                            hop: hop.clone(),
                        });
                        router_hosts.insert(hop.name.clone(), host);
                        host
                    }
                };
                chain.push(host);
            }
            topology.link_via(
                probe_hosts[&r.probe],
                &chain,
                dc_hosts[&r.dc],
                &r.segments,
                r.seed,
            );
        }
        let topology = topology.start(clock).map_err(netns_err)?;
        let control_clock = ReleaseClock::start().map_err(relay_err("-", "collector"))?;
        let mut parts = NetnsParts {
            collector_relays: Vec::new(),
            probe_runtimes: BTreeMap::new(),
            dc_runtimes: BTreeMap::new(),
            probe_hosts,
            topology,
            control_clock,
        };
        let mut responders = BTreeMap::new();
        for (dc, host) in &dc_hosts {
            let rt = parts.topology.runtime(*host).map_err(netns_err)?;
            let config = ResponderConfig {
                bind: parts.topology.addr(*host),
                ..local_config(dc)?
            };
            let dc_name = dc.clone();
            let started = rt
                .spawn(async move { start_responder(&dc_name, config).await })
                .await
                .map_err(|e| LabError::Collector(format!("responder task for {dc}: {e}")))??;
            responders.insert(dc.clone(), started);
            parts.dc_runtimes.insert(dc.clone(), rt);
        }
        let mut targets = BTreeMap::new();
        for r in routes {
            let responder = &responders[&r.dc];
            targets.insert(
                (r.probe.clone(), r.dc.clone()),
                Target {
                    addr: responder.quic_addr(),
                    stamp_port: responder.stamp_addr().port(),
                },
            );
        }
        for (probe, host) in &parts.probe_hosts {
            let rt = parts.topology.runtime(*host).map_err(netns_err)?;
            parts.probe_runtimes.insert(probe.clone(), rt);
        }
        Ok(Fabric {
            mode: Mode::Netns,
            responders,
            targets,
            relay_paths: Vec::new(),
            netns: Some(parts),
            routers,
        })
    }

    /// The mode.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// A data centre's responder.
    pub(crate) fn responder(&self, dc: &str) -> Option<&Responder> {
        self.responders.get(dc)
    }

    /// Where `probe` reaches `dc`.
    pub(crate) fn target(&self, probe: &str, dc: &str) -> Option<Target> {
        self.targets
            .get(&(probe.to_string(), dc.to_string()))
            .copied()
    }

    /// The routers of namespace mode, each with its address.
    pub(crate) fn routers(&self) -> &[LabRouter] {
        &self.routers
    }

    /// The namespaces of namespace mode, for the user to inspect.
    pub(crate) fn namespaces(&self) -> Vec<String> {
        self.netns
            .as_ref()
            .map(|n| {
                n.topology
                    .namespaces()
                    .into_iter()
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The address `probe` uploads to, for a collector at `collector` on
    /// the lab's loopback: that address in relay mode; in namespace mode a
    /// relay on the probe's own loopback (uploads are not part of any
    /// measured path).
    pub(crate) fn collector_addr(
        &mut self,
        probe: &str,
        collector: &str,
    ) -> Result<String, LabError> {
        let Some(parts) = self.netns.as_mut() else {
            return Ok(collector.to_string());
        };
        let upstream: SocketAddr = collector.parse().map_err(|_| {
            LabError::Collector(format!(
                "in namespace mode the collector must be given as IP:PORT, not {collector}"
            ))
        })?;
        let host = parts.probe_hosts.get(probe).copied().ok_or_else(|| {
            LabError::Collector(format!("probe {probe} has no namespace (it has no path)"))
        })?;
        let relay = parts
            .topology
            .loopback_relay(host, upstream, parts.control_clock.clone())
            .map_err(netns_err)?;
        let addr = relay.addr().to_string();
        parts.collector_relays.push(relay);
        Ok(addr)
    }

    /// Runs `probe`'s task: in its namespace in namespace mode.
    pub(crate) fn spawn_probe<F>(&self, probe: &str, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self
            .netns
            .as_ref()
            .and_then(|n| n.probe_runtimes.get(probe))
        {
            Some(rt) => rt.spawn(task),
            None => tokio::spawn(task),
        }
    }

    /// Stops the responders, paths and namespaces.
    pub(crate) async fn stop(self) {
        drop(self.relay_paths);
        let mut netns = self.netns;
        for (dc, r) in self.responders {
            match netns.as_ref().and_then(|n| n.dc_runtimes.get(&dc)) {
                Some(rt) => {
                    let _ = rt.spawn(r.shutdown()).await;
                }
                None => r.shutdown().await,
            }
        }
        if let Some(parts) = netns.take() {
            // Runtimes join their threads and namespaces run `ip netns
            // del`: blocking work, off the async threads.
            let _ = tokio::task::spawn_blocking(move || drop(parts)).await;
        }
    }
}

fn local_config(dc: &str) -> Result<ResponderConfig, LabError> {
    ResponderConfig::local().map_err(|e| LabError::Responder {
        datacenter: dc.to_string(),
        source: e.into(),
    })
}

async fn start_responder(dc: &str, config: ResponderConfig) -> Result<Responder, LabError> {
    Responder::start(config)
        .await
        .map_err(|source| LabError::Responder {
            datacenter: dc.to_string(),
            source,
        })
}
