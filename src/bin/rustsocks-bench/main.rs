//! rustsocks-bench: a load generator for any SOCKS5 proxy, and the targets it
//! talks to. See loadtests/MANUAL.md.

mod client;
mod report;
mod scenario;
mod target;
// TUN devices and ppoll(2): the latency emulator is Linux only.
#[cfg(target_os = "linux")]
mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use client::{Client, DestKind};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "rustsocks-bench",
    version,
    about = "Load generator for SOCKS5 proxies"
)]
struct Cli {
    /// The proxy under test.
    #[arg(long, default_value = "127.0.0.1:1080", global = true)]
    proxy: SocketAddr,
    /// No proxy: the same scenario straight to the target (the physical baseline).
    #[arg(long, global = true)]
    direct: bool,
    /// Username/password authentication (RFC 1929).
    #[arg(long, global = true, requires = "password")]
    user: Option<String>,
    #[arg(long, global = true)]
    password: Option<String>,
    /// How the destination is written in CONNECT: an IPv4 or IPv6 address, or the
    /// name "localhost" for the proxy to resolve.
    #[arg(long, value_enum, default_value = "ipv4", global = true)]
    dest: DestKind,
    /// Use a running `rustsocks-bench target` at this base port instead of starting
    /// the targets inside this process.
    #[arg(long, global = true)]
    target: Option<SocketAddr>,
    /// A name for this run in the JSON output (e.g. the proxy's name).
    #[arg(long, default_value = "", global = true)]
    label: String,
    /// Bound on opening one tunnel.
    #[arg(long, default_value_t = 10_000, global = true)]
    timeout_ms: u64,
    /// SOCKS inside TLS (a proxy with `[server.tls]`): trust the CA certificates in
    /// this PEM file. The TLS handshake counts in the session time.
    #[arg(long, value_name = "FILE", global = true)]
    tls_ca: Option<std::path::PathBuf>,
    /// The name the proxy's certificate must carry, with --tls-ca.
    #[arg(long, default_value = "localhost", global = true)]
    tls_name: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N sequential sessions (connect, greeting, CONNECT, 64-byte echo, close).
    Latency {
        #[arg(long, default_value_t = 5_000)]
        count: u64,
        #[arg(long, default_value_t = 60)]
        max_secs: u64,
    },
    /// The same sessions from C concurrent workers.
    Rate {
        #[arg(long, default_value_t = 50)]
        concurrency: u64,
        #[arg(long, default_value_t = 20_000)]
        count: u64,
        #[arg(long, default_value_t = 60)]
        max_secs: u64,
    },
    /// Bulk transfer over S streams for a fixed time.
    Throughput {
        #[arg(long, default_value_t = 1)]
        streams: u64,
        #[arg(long, value_enum, default_value = "down")]
        direction: scenario::Direction,
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// `rate` (or `latency` with --concurrency 1) plus the proxy's pool hit rate,
    /// read from its management API; for a target behind an emulated round trip.
    Pool {
        /// The RustSocks management API (for /api/pool/stats).
        #[arg(long, default_value = "127.0.0.1:9090")]
        api: SocketAddr,
        #[arg(long, default_value_t = 1)]
        concurrency: u64,
        #[arg(long, default_value_t = 2_000)]
        count: u64,
        #[arg(long, default_value_t = 60)]
        max_secs: u64,
    },
    /// Hold K tunnels open and report the proxy's resident memory per tunnel.
    Idle {
        #[arg(long, default_value_t = 2_000)]
        tunnels: u64,
        /// The proxy's process id (its /proc/PID/status is read).
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 2)]
        hold_secs: u64,
    },
    /// Run the echo, sink and source targets on BIND, BIND+1 and BIND+2 until killed.
    Target {
        #[arg(long, default_value = "127.0.0.1:7000")]
        bind: SocketAddr,
    },
    /// Latency emulator: join TUN devices A and B, delaying each packet by half
    /// of --rtt-ms (see scripts/netns-latency.sh). Runs until killed; needs root.
    Wire {
        #[arg(long, default_value = "rsw0")]
        a: String,
        #[arg(long, default_value = "rsw1")]
        b: String,
        #[arg(long, default_value_t = 5.0)]
        rtt_ms: f64,
        /// Fraction of packets to drop, 0 to below 1.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Fraction of TCP flows (IPv4) to cut: at a random point the flow's packet is
        /// dropped and both ends get a reset, as from a middlebox that lost the flow.
        #[arg(long, default_value_t = 0.0)]
        reset_rate: f64,
        /// The cut point is uniform over a flow's first this many payload bytes (both
        /// directions counted); a flow that ends sooner is not cut.
        #[arg(long, default_value_t = 262_144)]
        reset_within: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Scenario::Wire {
        a,
        b,
        rtt_ms,
        loss,
        reset_rate,
        reset_within,
    } = &cli.scenario
    {
        #[cfg(target_os = "linux")]
        return wire::run(
            a,
            b,
            wire::Faults {
                rtt: Duration::from_secs_f64(rtt_ms / 1000.0),
                loss: *loss,
                reset_rate: *reset_rate,
                reset_within: *reset_within,
            },
        );
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (a, b, rtt_ms, loss, reset_rate, reset_within);
            bail!("the latency emulator needs Linux (TUN devices)");
        }
    }
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

/// An idle run holds two descriptors per tunnel in this process (the client side and
/// the embedded echo's side); the usual soft limit of 1,024 would stop it at ~500.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a valid rlimit struct that outlives the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Scenario::Target { bind } = cli.scenario {
        let t = target::start(bind).await?;
        eprintln!(
            "targets: echo {}, sink {}, source {}",
            t.echo, t.sink, t.source
        );
        std::future::pending::<()>().await;
    }
    if cli.dest == DestKind::Domain && cli.target.is_some_and(|t| !t.ip().is_loopback()) {
        bail!(
            "--dest domain asks the proxy for \"localhost\", which cannot name a --target \
             that is not on loopback; use --dest ipv4 or ipv6"
        );
    }
    let targets = match cli.target {
        Some(base) => target::Targets::at(base),
        None => {
            let ip: std::net::IpAddr = if cli.dest == DestKind::Ipv6 {
                "::1".parse()?
            } else {
                "127.0.0.1".parse()?
            };
            target::start(SocketAddr::new(ip, 0))
                .await
                .context("starting the embedded targets")?
        }
    };
    let tls = match &cli.tls_ca {
        Some(ca) => {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(cli.tls_name.clone())
                .context("--tls-name is not a DNS name or IP address")?;
            Some((client::tls_connector(ca)?, name))
        }
        None => None,
    };
    let client = Client {
        proxy: (!cli.direct).then_some(cli.proxy),
        credentials: cli.user.zip(cli.password),
        dest_kind: cli.dest,
        timeout: Duration::from_millis(cli.timeout_ms),
        tls,
    };
    let (name, (mut result, lines)) = match cli.scenario {
        Scenario::Latency { count, max_secs } => (
            "latency",
            scenario::latency(&client, targets.echo, count, Duration::from_secs(max_secs)).await,
        ),
        Scenario::Rate {
            concurrency,
            count,
            max_secs,
        } => (
            "rate",
            scenario::rate(
                &client,
                targets.echo,
                concurrency,
                count,
                Duration::from_secs(max_secs),
            )
            .await,
        ),
        Scenario::Throughput {
            streams,
            direction,
            secs,
        } => (
            "throughput",
            scenario::throughput(
                &client,
                targets.sink,
                targets.source,
                streams,
                direction,
                secs,
            )
            .await?,
        ),
        Scenario::Pool {
            api,
            concurrency,
            count,
            max_secs,
        } => (
            "pool",
            scenario::pool(
                &client,
                targets.echo,
                api,
                concurrency,
                count,
                Duration::from_secs(max_secs),
            )
            .await?,
        ),
        Scenario::Idle {
            tunnels,
            pid,
            hold_secs,
        } => (
            "idle",
            scenario::idle(
                &client,
                targets.echo,
                tunnels,
                pid,
                Duration::from_secs(hold_secs),
            )
            .await?,
        ),
        Scenario::Target { .. } | Scenario::Wire { .. } => unreachable!("handled above"),
    };
    result["scenario"] = json!(name);
    result["label"] = json!(cli.label);
    result["proxy"] = json!(client.proxy.map(|p| p.to_string()));
    result["tls"] = json!(client.tls.is_some());
    result["dest"] = json!(format!("{:?}", cli.dest).to_lowercase());
    report::emit(&result, &lines);
    Ok(())
}
