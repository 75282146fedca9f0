//! Command-line edge: parses arguments, loads the configuration, sets up logging,
//! runs the server until SIGINT/SIGTERM. The only place that uses `anyhow`, and
//! where an error becomes one line on stderr and exit code 1.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use rustsocks::config::{Config, ConfigError, LogFormat, LoggingConfig};
use rustsocks::App;

#[derive(Parser)]
#[command(
    name = "rustsocks",
    version,
    about = "SOCKS5 and SOCKS4/4a proxy server"
)]
struct Cli {
    /// TOML configuration file; without it the embedded defaults are used
    /// (SOCKS on 127.0.0.1:1080, no authentication).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on ADDR:PORT instead of server.bind_address/bind_port.
    #[arg(long, value_name = "ADDR:PORT")]
    bind: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a configuration file: prints OK, or every problem and exits non-zero.
    CheckConfig { file: PathBuf },
    /// Read a password from standard input and print its argon2id hash, for
    /// `password_hash` in [[auth.users]].
    HashPassword,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::CheckConfig { file }) => check_config(&file),
        Some(Cmd::HashPassword) => hash_password(),
        None => run(cli.config.as_deref(), cli.bind),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined on one line, each cause once (several messages
/// already quote their source: `cannot read config file PATH: No such file ...`).
/// Never a backtrace, whatever `RUST_BACKTRACE` says: returning the error from
/// `main` would print anyhow's `Debug` form, which adds one when it is set. A
/// configuration with several problems is the exception: one line for each.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

fn load(path: Option<&Path>, bind: Option<SocketAddr>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    if let Some(addr) = bind {
        config.server.bind_address = addr.ip();
        config.server.bind_port = addr.port();
    }
    config.validate()?;
    Ok(config)
}

/// Everything start-up would check before binding (validation reads the token
/// file and looks at the database file), plus whether the ports are free where
/// that can be seen without binding them.
fn check_config(file: &Path) -> anyhow::Result<()> {
    let config = load(Some(file), None)?;
    for warning in config.warnings() {
        println!("warning: {warning}");
    }
    println!("{}", config.access_summary());
    match config.ports_in_use() {
        Ok(in_use) if in_use.is_empty() => {}
        Ok(in_use) => return Err(ConfigError::Unusable(in_use).into()),
        Err(unchecked) => println!("note: {unchecked}"),
    }
    println!("OK");
    Ok(())
}

fn hash_password() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (input is shown): ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("empty password: write the password to standard input, e.g. `echo -n secret | rustsocks hash-password`");
    }
    if password.len() > 255 {
        bail!(
            "password is {} bytes; SOCKS (RFC 1929) carries at most 255",
            password.len()
        );
    }
    let hash = rustsocks::auth::hash_password(password)
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    println!("{hash}");
    Ok(())
}

fn run(path: Option<&Path>, bind: Option<SocketAddr>) -> anyhow::Result<()> {
    let config = load(path, bind)?;
    init_logging(&config.logging);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match config.server.runtime {
        // Connections run on threads of their own; this runtime has the API,
        // the reload watcher and the pool's housekeeping.
        rustsocks::config::Runtime::PerCore => builder.worker_threads(1),
        rustsocks::config::Runtime::Shared => builder.worker_threads(config.server.threads()),
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Handlers go in before the listener opens, so a signal that arrives as soon
        // as the server reports ready is a graceful shutdown, not a kill.
        let mut signals = Signals::install()?;
        let server = App::start_from(config, path.map(Path::to_owned)).await?;
        signals.wait(&server).await;
        tracing::info!("shutting down: no new connections");
        let report = server.shutdown().await;
        tracing::info!(forced = report.forced, "stopped");
        Ok(())
    })
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Until SIGTERM or SIGINT; each SIGHUP meanwhile reloads the access rules and
    /// the TLS files (a bad file is logged and changes nothing).
    async fn wait(&mut self, server: &rustsocks::Running) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return tracing::info!("SIGTERM received"),
                _ = self.int.recv() => return tracing::info!("SIGINT received"),
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP received: reloading the access rules and TLS files");
                    let _ = tokio::task::block_in_place(|| server.reload_acl("SIGHUP"));
                    let _ = tokio::task::block_in_place(|| server.reload_tls("SIGHUP"));
                }
            }
        }
    }
}

fn init_logging(config: &LoggingConfig) {
    let level = tracing::Level::from(config.level);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    match config.format {
        LogFormat::Pretty => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}
