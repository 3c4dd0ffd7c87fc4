//! `path_trace`'s sockets: unprivileged probes with rising TTL, their
//! ICMP answers read from the socket's error queue (`IP_RECVERR`,
//! `IPV6_RECVERR`), as `tracepath` does. Two methods:
//!
//! - UDP datagrams to a high port (`port_base` + a per-probe offset): a
//!   router answers time exceeded, the target port unreachable;
//! - ICMP echo on a datagram socket (`SOCK_DGRAM`, `IPPROTO_ICMP`), which
//!   the kernel allows where `net.ipv4.ping_group_range` holds the
//!   process's group: a router answers time exceeded, the target an echo
//!   reply.
//!
//! Each probe carries a 4-byte tag; an answer counts only for the probe in
//! flight whose tag it quotes, so a late answer to an earlier probe is
//! never taken for the current one. Blocking: run it on a thread of its
//! own.

use super::{classify_io, send_sample, Event, HttpCtx, TargetCtx};
use crate::recorder::Outcome;
use crate::trace::{Answer, End, Next, Trace, TracePlan, TraceSession};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use vantage_wire::{ErrorClass, Metric};

/// traceroute's first UDP port.
const UDP_PORT_BASE: u16 = 33434;

/// One scheduled `path_trace` toward a responder's host (see [`traced`]).
pub(crate) async fn path_trace(ctx: Arc<TargetCtx>, intended: Instant) {
    traced(&ctx.events, ctx.index, ctx.quic_addr.ip(), intended).await;
}

/// One scheduled `path_trace` toward the address a URL's host resolves to
/// now (the first answer, as a request's connect tries first); a lookup
/// that fails is a `dns` error of the attempt.
pub(crate) async fn path_trace_url(ctx: Arc<HttpCtx>, intended: Instant) {
    let deadline = intended + ctx.timeout;
    let mut phases = super::http::Phases::default();
    let target = match ctx.lookup(deadline, &mut phases).await {
        Ok((addresses, _)) => addresses.first().copied(),
        Err((class, why)) => {
            tracing::debug!(url = %ctx.target.url, %class, why, "path_trace: lookup failed");
            return send_sample(&ctx.events, ctx.index, M, intended, Outcome::Failed(class)).await;
        }
    };
    match target {
        Some(ip) => traced(&ctx.events, ctx.index, ip, intended).await,
        None => {
            send_sample(
                &ctx.events,
                ctx.index,
                M,
                intended,
                Outcome::Failed(ErrorClass::Dns),
            )
            .await
        }
    }
}

const M: Metric = Metric::PathTrace;

/// Traces toward `target` on a blocking thread: ICMP echo where the
/// kernel allows this process datagram ICMP sockets, else UDP. The
/// attempt's value is the round trip to the target when reached; a trace
/// that never reaches it (every probe filtered, say) is lost, an
/// unreachable answer an `unreachable` error, and a socket that cannot be
/// opened an error of its class. Whenever a trace ran, reached or not,
/// its hops go to the recorder, to travel with the window's series.
async fn traced(events: &mpsc::Sender<Event>, index: usize, target: IpAddr, intended: Instant) {
    let traced = tokio::task::spawn_blocking(move || {
        let method = if icmp_allowed(target.is_ipv6()) {
            TraceMethod::Icmp
        } else {
            TraceMethod::Udp {
                port_base: UDP_PORT_BASE,
            }
        };
        run_trace(target, method, TracePlan::default())
    })
    .await;
    let failed = |class: ErrorClass, why: &dyn std::fmt::Display| {
        tracing::debug!(target_index = index, %class, %why, "path_trace failed");
        Outcome::Failed(class)
    };
    let trace = match traced {
        Ok(Ok(trace)) => trace,
        Ok(Err(e)) => {
            let outcome = failed(classify_io(&e), &e);
            return send_sample(events, index, M, intended, outcome).await;
        }
        Err(e) => {
            let outcome = failed(ErrorClass::Io, &e);
            return send_sample(events, index, M, intended, outcome).await;
        }
    };
    let outcome = match (trace.end, trace.target_rtt()) {
        (End::Reached, Some(latency)) => Outcome::Measured {
            latency,
            server_time: None,
            bytes: 0,
        },
        (End::Unreachable, _) => Outcome::Failed(ErrorClass::Unreachable),
        _ => Outcome::Lost,
    };
    let _ = events
        .send(Event::Trace {
            target: index,
            intended,
            trace,
        })
        .await;
    send_sample(events, index, M, intended, outcome).await;
}

/// Whether this process may open a datagram ICMP socket
/// (`net.ipv4.ping_group_range` holds one of its groups; root always may).
pub fn icmp_allowed(v6: bool) -> bool {
    let (domain, protocol) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    Socket::new(domain, Type::DGRAM, Some(protocol)).is_ok()
}

/// How a trace probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceMethod {
    /// UDP to `port_base + n`, n the probe's number (traceroute's 33434).
    Udp {
        /// The first destination port.
        port_base: u16,
    },
    /// ICMP echo on a datagram socket.
    Icmp,
}

/// `SO_EE_ORIGIN_ICMP` and `SO_EE_ORIGIN_ICMP6` (linux/errqueue.h).
const ORIGIN_ICMP: u8 = 2;
const ORIGIN_ICMP6: u8 = 3;

/// Runs one trace toward `target`, blocking until it ends (at most
/// `max_hops × probes_per_hop × probe_timeout`).
pub fn run_trace(target: IpAddr, method: TraceMethod, plan: TracePlan) -> io::Result<Trace> {
    let v6 = target.is_ipv6();
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let protocol = match (method, v6) {
        (TraceMethod::Udp { .. }, _) => Protocol::UDP,
        (TraceMethod::Icmp, false) => Protocol::ICMPV4,
        (TraceMethod::Icmp, true) => Protocol::ICMPV6,
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(protocol))?;
    let any: SocketAddr = if v6 {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    socket.bind(&any.into())?;
    recv_errors(&socket, v6)?;
    let mut session = TraceSession::new(plan);
    let mut tag: u32 = rand::random();
    let mut in_flight_tag = None;
    loop {
        match session.poll(Instant::now()) {
            Next::Done => return Ok(session.finish()),
            Next::Send { ttl } => {
                tag = tag.wrapping_add(1);
                if v6 {
                    socket.set_unicast_hops_v6(u32::from(ttl))?;
                } else {
                    socket.set_ttl_v4(u32::from(ttl))?;
                }
                let (bytes, port) = match method {
                    TraceMethod::Udp { port_base } => {
                        let offset = (tag % 64) as u16;
                        (tag.to_be_bytes().to_vec(), port_base.wrapping_add(offset))
                    }
                    TraceMethod::Icmp => (echo_request(v6, tag), 0),
                };
                let to = SockAddr::from(SocketAddr::new(target, port));
                let now = Instant::now();
                match socket.send_to(&bytes, &to) {
                    Ok(_) => {
                        session.sent(ttl, now);
                        in_flight_tag = Some(tag);
                    }
                    // A send the kernel refuses (no route, say) is a probe
                    // lost, not the end of the trace.
                    Err(e) => {
                        tracing::debug!(error = %e, ttl, "path_trace probe not sent");
                        session.sent(ttl, now);
                        in_flight_tag = None;
                    }
                }
            }
            Next::Wait { until } => {
                let wait = until.saturating_duration_since(Instant::now());
                if let Some(answer) = wait_answer(&socket, v6, method, in_flight_tag, wait)? {
                    session.answered(answer, Instant::now());
                    in_flight_tag = None;
                }
            }
        }
    }
}

/// An ICMP echo request carrying `tag`: the kernel fills in the
/// identifier and the checksum on a datagram socket.
fn echo_request(v6: bool, tag: u32) -> Vec<u8> {
    let kind = if v6 { 128 } else { 8 };
    let mut p = vec![kind, 0, 0, 0, 0, 0];
    p.extend_from_slice(&(tag as u16).to_be_bytes());
    p.extend_from_slice(&tag.to_be_bytes());
    p
}

fn recv_errors(socket: &Socket, v6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, name) = if v6 {
        (libc::SOL_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::SOL_IP, libc::IP_RECVERR)
    };
    // SAFETY: setsockopt on an open socket with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits up to `wait` for an answer quoting `tag`: an ICMP error from the
/// error queue, or (ICMP method) an echo reply, or (UDP) a reply from a
/// listening target. `None` when the time passes first.
fn wait_answer(
    socket: &Socket,
    v6: bool,
    method: TraceMethod,
    tag: Option<u32>,
    wait: std::time::Duration,
) -> io::Result<Option<Answer>> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN | libc::POLLERR,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(60_000) as libc::c_int) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if ready == 0 {
            return Ok(None);
        }
        if pfd.revents & libc::POLLERR != 0 {
            if let Some((answer, quoted)) = read_error(socket, v6, method)? {
                if tag.is_some() && quoted == tag {
                    return Ok(Some(answer));
                }
            }
        } else if pfd.revents & libc::POLLIN != 0 {
            let mut buf = [0u8; 1500];
            let (n, from) = recv_from(socket, &mut buf)?;
            let quoted = match method {
                TraceMethod::Icmp => tag_at(&buf[..n], 8),
                TraceMethod::Udp { .. } => tag_at(&buf[..n], 0),
            };
            let echo_reply = matches!((v6, buf.first()), (false, Some(0)) | (true, Some(129)));
            let reached = matches!(method, TraceMethod::Udp { .. }) || echo_reply;
            if reached && tag.is_some() && quoted == tag {
                return Ok(Some(Answer::Reached { from }));
            }
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
    }
}

fn tag_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

fn recv_from(socket: &Socket, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
    // SAFETY: recvfrom into a valid buffer and a sockaddr_storage.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let n = unsafe {
        libc::recvfrom(
            socket.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = sockaddr_ip(&addr).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    Ok((n as usize, from))
}

fn sockaddr_ip(addr: &libc::sockaddr_storage) -> Option<IpAddr> {
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            Some(IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// Reads one message from the error queue: the answer it reports and the
/// tag its quoted probe carried.
fn read_error(
    socket: &Socket,
    v6: bool,
    method: TraceMethod,
) -> io::Result<Option<(Answer, Option<u32>)>> {
    let mut data = [0u8; 1500];
    let mut control = [0u8; 512];
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below points at
    // a live buffer of the stated length.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: recvmsg with the msghdr above.
    let n = unsafe {
        libc::recvmsg(
            socket.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    let quoted = match method {
        TraceMethod::Icmp => tag_at(&data[..n as usize], 8),
        TraceMethod::Udp { .. } => tag_at(&data[..n as usize], 0),
    };
    // SAFETY: walking the control messages recvmsg filled in.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        let (level, kind) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
        let ours = (!v6 && level == libc::SOL_IP && kind == libc::IP_RECVERR)
            || (v6 && level == libc::SOL_IPV6 && kind == libc::IPV6_RECVERR);
        if ours {
            // SAFETY: an IP_RECVERR message holds a sock_extended_err,
            // then the offender's address (SO_EE_OFFENDER).
            let ee = unsafe { &*(libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err) };
            let offender = unsafe {
                &*((libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err).add(1)
                    as *const libc::sockaddr_storage)
            };
            let from = sockaddr_ip(offender);
            return Ok(
                classify(ee.ee_origin, ee.ee_type, ee.ee_code, from, method).map(|a| (a, quoted))
            );
        }
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(None)
}

/// What an ICMP error means for a trace.
fn classify(
    origin: u8,
    kind: u8,
    code: u8,
    from: Option<IpAddr>,
    method: TraceMethod,
) -> Option<Answer> {
    let from = from?;
    let udp = matches!(method, TraceMethod::Udp { .. });
    match (origin, kind, code) {
        (ORIGIN_ICMP, 11, _) | (ORIGIN_ICMP6, 3, _) => Some(Answer::TimeExceeded { from }),
        // Port unreachable: the target's own answer to a UDP probe.
        (ORIGIN_ICMP, 3, 3) | (ORIGIN_ICMP6, 1, 4) if udp => Some(Answer::Reached { from }),
        (ORIGIN_ICMP, 3, code) | (ORIGIN_ICMP6, 1, code) => {
            Some(Answer::Unreachable { from, code })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_errors_mean_a_router_the_target_or_a_refusal() {
        let r: IpAddr = "198.18.0.12".parse().unwrap();
        let udp = TraceMethod::Udp { port_base: 33434 };
        assert_eq!(
            classify(2, 11, 0, Some(r), udp),
            Some(Answer::TimeExceeded { from: r })
        );
        assert_eq!(
            classify(3, 3, 0, Some(r), udp),
            Some(Answer::TimeExceeded { from: r })
        );
        assert_eq!(
            classify(2, 3, 3, Some(r), udp),
            Some(Answer::Reached { from: r })
        );
        assert_eq!(
            classify(3, 1, 4, Some(r), udp),
            Some(Answer::Reached { from: r })
        );
        // Port unreachable to an echo is not the target's echo reply.
        assert_eq!(
            classify(2, 3, 3, Some(r), TraceMethod::Icmp),
            Some(Answer::Unreachable { from: r, code: 3 })
        );
        assert_eq!(
            classify(2, 3, 13, Some(r), udp),
            Some(Answer::Unreachable { from: r, code: 13 })
        );
        // A local error (origin 1), or no offender: nothing to say.
        assert_eq!(classify(1, 0, 0, Some(r), udp), None);
        assert_eq!(classify(2, 11, 0, None, udp), None);
        assert_eq!(echo_request(false, 0x0102_0304)[8..], [1, 2, 3, 4]);
        assert_eq!(echo_request(true, 7)[0], 128);
    }
}
