//! UDP ASSOCIATE (RFC 1928 section 7): one relay socket that faces the client,
//! living exactly as long as the client's TCP control connection.
//!
//! Datagrams are taken only from the client's address: its IP is the control
//! connection's, its port the one the request named or, when it named port 0, the
//! port of the first datagram; the address never moves after that (a datagram from
//! another port of the same host is foreign). Each carries the SOCKS UDP header; fragments (FRAG != 0) and
//! malformed headers are dropped and counted. Payloads go upstream from a socket of
//! the destination's address family; answers come back wrapped in a header naming
//! their sender, and only from destinations the client has sent to. The relay's own
//! sockets and the proxy's listeners are never destinations: a datagram addressed to
//! the relay itself would loop through it, growing by a header each lap.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::Request;
use super::outcome::{Bytes, Outcome};
use super::relay::RelayEnd;
use crate::access::{Access, Check, HeldPort, OwnAddresses, Verdict};
use crate::config::AclCommand;
use crate::connector::{ConnectError, Resolver};
use crate::counters::Counters;
use crate::metrics::Metrics;
use crate::protocol::socks5::ReplyCode;
use crate::protocol::udp::UdpHeader;
use crate::protocol::TargetAddr;
use crate::telemetry::{Signal, Telemetry};

/// Largest UDP payload (IPv4); buffers are this big so nothing is truncated.
const MAX_DATAGRAM: usize = 65_535;
/// Destinations remembered per association (answers are accepted only from them).
const MAX_PEERS: usize = 4096;
/// Bound on resolving a domain destination.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn associate(r: Request<'_>) -> Outcome {
    let ctx = r.ctx;
    let local_ip = match r.local_ip() {
        Ok(ip) => ip,
        Err(e) => return Outcome::Broken(e),
    };
    // A client the rules block from UDP to any destination (a rule with no
    // destination or port) gets no relay at all.
    let anywhere = TargetAddr::Ip(SocketAddr::from(([0, 0, 0, 0], 0)));
    let acl = r.check(AclCommand::Udp);
    if let Some(verdict) = acl.blocked_whatever_the_addresses(&anywhere) {
        let _ = r.reply(ReplyCode::NotAllowed, None).await;
        return Outcome::Failed {
            opening: r.opening(),
            dest: anywhere,
            error: ConnectError::Refused {
                dest: "any UDP destination".into(),
                refusal: acl.refusal(&verdict),
            },
        };
    }
    let generation = acl.generation();
    drop(acl);
    let opened = r.announce(UdpSocket::bind((local_ip, 0)).await, UdpSocket::local_addr);
    let (relay, bound) = match opened.await {
        Ok(socket) => socket,
        Err(outcome) => return outcome,
    };
    // A port of 0 means "from any port of the client's host".
    let expected_port = r.req.dest.port();
    let session = r.open_session(None, false);
    let local = Counters::default();
    let counters = session.as_ref().map_or(&local, |s| &s.counters);
    let mut assoc = Association {
        held: vec![ctx.own.hold_udp_port(bound.port())],
        relay,
        client_ip: r.peer.ip(),
        expected_port,
        client_addr: None,
        own: &ctx.own,
        up_v4: None,
        up_v6: None,
        peers: HashSet::new(),
        dns: HashMap::new(),
        access: &ctx.access,
        resolver: ctx.connector.resolver(),
        generation,
        decided: HashMap::new(),
        counters,
        metrics: &ctx.metrics,
        telemetry: &ctx.telemetry,
        user: r.acl_user(),
        groups: &r.groups,
    };
    let terminate = session
        .as_ref()
        .map(|s| s.terminate.clone())
        .unwrap_or_default();
    ctx.metrics.sessions_active.inc();
    let end = assoc
        .run(r.client.tcp(), ctx.udp_idle_timeout, r.cancel, &terminate)
        .await;
    ctx.metrics.sessions_active.dec();
    Outcome::Ended {
        bytes: Bytes::from(counters),
        session,
        end: Ok(end),
    }
}

struct Association<'a> {
    relay: UdpSocket,
    /// The relay's and upstream sockets' ports, counted as the proxy's own (no
    /// association may send to another's sockets) while the association lasts.
    held: Vec<HeldPort>,
    client_ip: IpAddr,
    expected_port: u16,
    /// Where the client's datagrams come from (answers go there): fixed by the
    /// first datagram accepted.
    client_addr: Option<SocketAddr>,
    own: &'a OwnAddresses,
    up_v4: Option<UdpSocket>,
    up_v6: Option<UdpSocket>,
    peers: HashSet<SocketAddr>,
    dns: HashMap<(String, u16), SocketAddr>,
    access: &'a Access,
    resolver: &'a Resolver,
    /// The generation of the rules `decided` and `peers` were decided under.
    generation: u64,
    /// Decisions per destination as the client wrote it (bounded by MAX_PEERS;
    /// cleared, with `peers`, when the rules are reloaded).
    decided: HashMap<TargetAddr, bool>,
    counters: &'a Counters,
    metrics: &'a Metrics,
    telemetry: &'a Telemetry,
    user: &'a str,
    groups: &'a [Box<str>],
}

async fn recv(socket: &Option<UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Completes when the client closes (or resets) its TCP control connection. Bytes
/// it sends there mean nothing in this state and are discarded.
pub(super) async fn closed(client: &TcpStream) {
    let mut scratch = [0u8; 64];
    loop {
        if client.readable().await.is_err() {
            return;
        }
        match client.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

impl<'a> Association<'a> {
    async fn run(
        &mut self,
        client: &TcpStream,
        idle: Duration,
        cancel: &CancellationToken,
        terminate: &CancellationToken,
    ) -> RelayEnd {
        let mut from_client = vec![0u8; MAX_DATAGRAM];
        let mut from_v4 = vec![0u8; MAX_DATAGRAM];
        let mut from_v6 = vec![0u8; MAX_DATAGRAM];
        let mut deadline = Instant::now() + idle;
        loop {
            tokio::select! {
                () = closed(client) => return RelayEnd::Completed,
                () = tokio::time::sleep_until(deadline) => return RelayEnd::IdleTimeout,
                () = cancel.cancelled() => return RelayEnd::Shutdown,
                () = terminate.cancelled() => return RelayEnd::Terminated,
                r = self.relay.recv_from(&mut from_client) => {
                    if let Ok((n, src)) = r {
                        if self.outbound(&from_client[..n], src).await {
                            deadline = Instant::now() + idle;
                        }
                    }
                }
                r = recv(&self.up_v4, &mut from_v4) => {
                    if let Ok((n, src)) = r {
                        if self.inbound(&from_v4[..n], src).await {
                            deadline = Instant::now() + idle;
                        }
                    }
                }
                r = recv(&self.up_v6, &mut from_v6) => {
                    if let Ok((n, src)) = r {
                        if self.inbound(&from_v6[..n], src).await {
                            deadline = Instant::now() + idle;
                        }
                    }
                }
            }
        }
    }

    fn drop_counted(&self, reason: &'static str) -> bool {
        self.metrics
            .udp_dropped
            .get_or_create(&[("reason", reason)])
            .inc();
        false
    }

    /// A datagram on the client-facing socket. Returns whether it was relayed.
    async fn outbound(&mut self, datagram: &[u8], src: SocketAddr) -> bool {
        let from_client = match self.client_addr {
            Some(fixed) => src == fixed,
            None => {
                src.ip() == self.client_ip
                    && (self.expected_port == 0 || src.port() == self.expected_port)
            }
        };
        if !from_client {
            return self.drop_counted("foreign_source");
        }
        self.client_addr = Some(src);
        let Ok((header, payload)) = UdpHeader::decode(datagram) else {
            return self.drop_counted("malformed");
        };
        if header.frag != 0 {
            return self.drop_counted("fragmented");
        }
        self.rules_current();
        // A name the rules block as a name is not looked up.
        if matches!(header.dest, TargetAddr::Domain(..)) && self.name_blocked(&header.dest) {
            return self.drop_counted("acl");
        }
        let Some(dest) = self.resolve(&header.dest).await else {
            return self.drop_counted("unresolved");
        };
        if !self.allowed(&header.dest, dest) {
            return self.drop_counted("acl");
        }
        // Answers are accepted only from destinations in `peers`: once it is full, a
        // datagram to a new one would be sent with its answer certain to be dropped.
        if self.peers.len() >= MAX_PEERS && !self.peers.contains(&dest) {
            return self.drop_counted("too_many_destinations");
        }
        // Bound first, so that the check below knows every socket of ours.
        if self.upstream_for(dest).await.is_none() {
            return self.drop_counted("no_route");
        }
        if self.is_own(dest) {
            return self.drop_counted("own_address");
        }
        let upstream = if dest.is_ipv4() {
            &self.up_v4
        } else {
            &self.up_v6
        };
        let Some(socket) = upstream else {
            return self.drop_counted("no_route");
        };
        if socket.send_to(payload, dest).await.is_err() {
            return self.drop_counted("send_failed");
        }
        self.peers.insert(dest);
        let c = self.counters;
        self.relayed(
            &c.client_to_upstream,
            &c.datagrams_client_to_upstream,
            "client_to_upstream",
            payload.len(),
        )
    }

    /// A datagram from upstream: wrapped and passed to the client.
    async fn inbound(&mut self, payload: &[u8], src: SocketAddr) -> bool {
        let Some(client) = self.client_addr else {
            return self.drop_counted("foreign_source");
        };
        if !self.peers.contains(&src) {
            return self.drop_counted("foreign_source");
        }
        let mut datagram = Vec::with_capacity(payload.len() + 22);
        UdpHeader {
            frag: 0,
            dest: TargetAddr::Ip(src),
        }
        .encode(&mut datagram);
        datagram.extend_from_slice(payload);
        if self.relay.send_to(&datagram, client).await.is_err() {
            return self.drop_counted("send_failed");
        }
        let c = self.counters;
        self.relayed(
            &c.upstream_to_client,
            &c.datagrams_upstream_to_client,
            "upstream_to_client",
            payload.len(),
        )
    }

    /// Counts one relayed datagram of `len` payload bytes; returns true (relayed).
    fn relayed(
        &self,
        bytes: &AtomicU64,
        datagrams: &AtomicU64,
        direction: &'static str,
        len: usize,
    ) -> bool {
        bytes.fetch_add(len as u64, Relaxed);
        datagrams.fetch_add(1, Relaxed);
        self.metrics
            .udp_datagrams
            .get_or_create(&[("direction", direction)])
            .inc();
        true
    }

    async fn resolve(&mut self, dest: &TargetAddr) -> Option<SocketAddr> {
        let (host, port) = match dest {
            TargetAddr::Ip(addr) => return Some(*addr),
            TargetAddr::Domain(host, port) => (host.clone(), *port),
        };
        if let Some(addr) = self.dns.get(&(host.clone(), port)) {
            return Some(*addr);
        }
        let found = tokio::time::timeout(RESOLVE_TIMEOUT, self.resolver.resolve(dest)).await;
        let addr = *found.ok()?.ok()?.first()?;
        if self.dns.len() < MAX_PEERS {
            self.dns.insert((host, port), addr);
        }
        Some(addr)
    }

    /// Forgets what was decided under rules that have since been reloaded: the
    /// next datagrams are judged by the new rules, and answers are taken only from
    /// destinations sent to under them.
    fn rules_current(&mut self) {
        let generation = self.access.generation();
        if generation != self.generation {
            self.generation = generation;
            self.decided.clear();
            self.peers.clear();
        }
    }

    /// A fresh check (with the rules in force now; not kept, so an association
    /// does not hold on to old rule sets).
    fn check(&self) -> Check<'a> {
        self.access
            .check(self.user, self.groups, self.client_ip, AclCommand::Udp)
    }

    /// Whether a rule blocks the name `dest` whatever it resolves to.
    fn name_blocked(&mut self, dest: &TargetAddr) -> bool {
        if let Some(&allowed) = self.decided.get(dest) {
            return !allowed;
        }
        let check = self.check();
        match check.blocked_whatever_the_addresses(dest) {
            Some(verdict) => {
                self.blocked(dest, &check, &verdict);
                true
            }
            None => false,
        }
    }

    /// Whether the access rules let the client send to `dest` (as written in the
    /// datagram), which resolved to `addr`. Decided once per destination while the
    /// rules stay the same; a block is reported when first decided.
    fn allowed(&mut self, dest: &TargetAddr, addr: SocketAddr) -> bool {
        if let Some(&allowed) = self.decided.get(dest) {
            return allowed;
        }
        let check = self.check();
        let verdict = check.verdict(dest, &[addr]);
        // The proxy's own addresses are dropped (and counted) as such further on,
        // once the association's own sockets are known.
        if verdict.allowed() || matches!(verdict, Verdict::Own(_)) {
            self.remember(dest, true);
            return true;
        }
        self.blocked(dest, &check, &verdict);
        false
    }

    /// Reports a newly blocked destination and remembers the decision.
    fn blocked(&mut self, dest: &TargetAddr, check: &Check<'_>, verdict: &Verdict) {
        self.telemetry.emit(Signal::AclBlocked {
            user: self.user.to_owned(),
            destination: format!("{dest} (udp)"),
            reason: check.refusal(verdict).reason.into_owned(),
        });
        self.remember(dest, false);
    }

    fn remember(&mut self, dest: &TargetAddr, allowed: bool) {
        if self.decided.len() < MAX_PEERS {
            self.decided.insert(dest.clone(), allowed);
        }
    }

    /// Whether `dest` reaches this association's own sockets or the proxy's listeners.
    fn is_own(&self, dest: SocketAddr) -> bool {
        self.own.contains_udp(dest)
    }

    /// The upstream socket for `dest`'s address family, bound on first use.
    async fn upstream_for(&mut self, dest: SocketAddr) -> Option<&UdpSocket> {
        let (slot, any): (&mut Option<UdpSocket>, SocketAddr) = if dest.is_ipv4() {
            (&mut self.up_v4, SocketAddr::from(([0, 0, 0, 0], 0)))
        } else {
            (&mut self.up_v6, SocketAddr::from(([0u16; 8], 0)))
        };
        if slot.is_none() {
            let socket = UdpSocket::bind(any).await.ok()?;
            let port = socket.local_addr().ok()?.port();
            self.held.push(self.own.hold_udp_port(port));
            *slot = Some(socket);
        }
        slot.as_ref()
    }
}
