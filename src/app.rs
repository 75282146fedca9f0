//! Composition root: the only place that knows every part. It builds them from the
//! configuration in the order they depend on each other, hands each what it needs,
//! starts the SOCKS server and the management API, and stops them in reverse.
//!
//! Order: validate (nothing is bound before the configuration is known to be good),
//! bind both listeners (their addresses are the proxy's own, never a destination),
//! then telemetry, connector, metrics, authentication, sessions, the server and the
//! API.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::acl::{ReloadError, Reloaded};
use crate::access::{Access, AclControl, OwnAddresses};
use crate::api::{self, ApiDeps};
use crate::auth::{self, AuthError, Authenticator};
use crate::config::{Config, ConfigError, Runtime};
use crate::connector::{ConnectionPool, Connector, Resolver};
use crate::metrics::{Metrics, Phases};
use crate::server::{self, Context, ShutdownReport};
use crate::session::{Sessions, StoreError};
use crate::telemetry::{Signal, Telemetry};
use crate::tls::Tls;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot start the connection threads: {0}")]
    Threads(#[source] io::Error),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Sessions(#[from] StoreError),
}

mod reload;

/// How long the API may take to finish its responses at shutdown.
const API_SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct App;

impl App {
    /// Validates `config`, binds the SOCKS listener (and the API's) and starts
    /// accepting. Fails before binding anything if the configuration is invalid.
    pub async fn start(config: Config) -> Result<Running, StartError> {
        Self::start_from(config, None).await
    }

    /// `start` for a configuration read from `config_file`, whose `[acl]` section a
    /// reload (SIGHUP, `POST /api/acl/reload`) reads again.
    pub async fn start_from(
        config: Config,
        config_file: Option<PathBuf>,
    ) -> Result<Running, StartError> {
        let acl_rules = config.validated_acl()?;
        let api_token = config.api_token()?;
        let auth = Authenticator::new(&config.auth, config.login_backoff_limit())?;
        let telemetry = Telemetry::start(&config.telemetry);
        for message in config.warnings() {
            telemetry.emit(Signal::ConfigWarning { message });
        }
        let copies = match config.server.runtime {
            Runtime::PerCore => config.server.threads(),
            Runtime::Shared => 1,
        };
        let socks_tcp = server::listen_group(config.server.bind(), copies).map_err(|source| {
            StartError::Bind {
                addr: config.server.bind(),
                source,
            }
        })?;
        let api_tcp = match config.api.enabled {
            true => Some(bind(config.api.bind())?),
            false => None,
        };
        let socks_addr = socks_tcp[0]
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.server.bind(),
                source,
            })?;
        let tls = match config.server.tls.enabled {
            true => Some(Arc::new(Tls::load(&config.server.tls, "server.tls")?)),
            false => None,
        };
        let api_tls = match config.api.enabled && config.api.tls.enabled {
            true => Some(Arc::new(Tls::load(&config.api.tls, "api.tls")?)),
            false => None,
        };
        let mut listeners: Vec<_> = socks_tcp.into_iter().map(|l| (l, tls.clone())).collect();
        let mut plain_addr = None;
        if let Some(addr) = config.server.plain_bind {
            let plain = server::listen_group(addr, 1)
                .and_then(|mut l| {
                    let l = l.remove(0);
                    plain_addr = Some(l.local_addr()?);
                    Ok(l)
                })
                .map_err(|source| StartError::Bind { addr, source })?;
            listeners.push((plain, None));
        }
        let api_addr = match &api_tcp {
            Some(l) => Some(local_addr(l, config.api.bind())?),
            None => None,
        };
        let own = OwnAddresses::new(
            [Some(socks_addr), api_addr, plain_addr]
                .into_iter()
                .flatten(),
        )
        .with_address(config.server.external_address);
        let (resolver, fallback) = Resolver::new(&config.dns);
        if let Some(message) = fallback {
            tracing::warn!("{message}");
            telemetry.emit(Signal::ConfigWarning { message });
        }
        let phases = Phases::new();
        let connector = Connector::new(
            &config.server.pool,
            config.server.tcp_keepalive(),
            Arc::new(own.clone()),
            resolver,
            &phases,
            &telemetry,
        );
        let mut metrics = Metrics::new(connector.pool().cloned(), &phases);
        metrics.report_tls([&tls, &api_tls].into_iter().flatten().cloned().collect());
        let metrics = Arc::new(metrics);
        let access = Arc::new(Access::new(
            &config.acl,
            acl_rules,
            config_file,
            socks_addr.ip().to_canonical().is_loopback(),
            own.clone(),
            &metrics,
        ));
        auth.report_to(auth::Report {
            telemetry: telemetry.clone(),
            metrics: Arc::clone(&metrics),
        });
        let sessions = match config.sessions.enabled {
            true => Some(Arc::new(Sessions::start(
                &config.sessions,
                telemetry.clone(),
                &metrics,
            )?)),
            false => None,
        };
        let pool = connector.pool().cloned();
        let acl = AclControl {
            access: Arc::clone(&access),
            sessions: sessions.clone(),
            telemetry: telemetry.clone(),
            resolver: connector.resolver().untimed(),
        };
        let ctx = Context {
            auth,
            connector,
            access,
            own,
            handshake_timeout: config.server.handshake_timeout(),
            relay_idle_timeout: config.server.relay_idle_timeout(),
            external_address: config.server.external_address,
            bind_timeout: config.server.bind_timeout(),
            udp_idle_timeout: config.server.udp_idle_timeout(),
            certificate_user: config.auth.certificate_user,
            telemetry: telemetry.clone(),
            metrics: Arc::clone(&metrics),
            sessions: sessions.clone(),
        };
        let api = api_tcp.zip(api_addr).map(|(tcp, addr)| {
            // Read-only views, and the one capability to act: terminate a session.
            let deps = ApiDeps {
                pool: api::PoolView::new(pool.clone(), config.server.pool.clone()),
                telemetry: api::TelemetryView::new(telemetry.clone(), config.telemetry.max_events),
                metrics: api::MetricsView::new(metrics),
                terminate: sessions.clone().map(api::Terminate::new),
                sessions: sessions.clone().map(api::SessionsView::new),
                acl: acl.clone(),
                token: api_token,
            };
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(api::serve(tcp, deps, shutdown.clone(), api_tls.clone()));
            tracing::info!(api = %addr, "management API ready");
            (shutdown, task)
        });
        let server = server::start(listeners, ctx, &config.server).map_err(StartError::Threads)?;
        let watch = tokio::spawn(reload::watch_acl_file(acl.clone()));
        // Each TLS configuration (SOCKS listener, API) watches its own files.
        let tls: Vec<_> = [tls, api_tls]
            .into_iter()
            .flatten()
            .map(|tls| {
                let watch =
                    tokio::spawn(reload::watch_tls_files(Arc::clone(&tls), telemetry.clone()));
                (tls, watch)
            })
            .collect();
        tracing::info!(socks = %socks_addr, "SOCKS listener ready");
        Ok(Running {
            acl,
            watch,
            tls,
            socks_addr,
            api_addr,
            pool,
            telemetry,
            sessions,
            server,
            api,
        })
    }
}

fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    server::listen(addr).map_err(|source| StartError::Bind { addr, source })
}

/// The address `listener` was bound to for `asked` (the port is known only now when
/// `asked` named port 0).
fn local_addr(listener: &TcpListener, asked: SocketAddr) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        addr: asked,
        source,
    })
}

/// The running proxy. Dropping it does not stop it; call `shutdown`.
pub struct Running {
    acl: AclControl,
    /// Polls `acl.file` for changes.
    watch: JoinHandle<()>,
    /// Each TLS configuration in force (SOCKS, API), and the task that polls its
    /// files.
    tls: Vec<(Arc<Tls>, JoinHandle<()>)>,
    socks_addr: SocketAddr,
    api_addr: Option<SocketAddr>,
    pool: Option<ConnectionPool>,
    telemetry: Telemetry,
    sessions: Option<Arc<Sessions>>,
    server: server::Running,
    api: Option<(CancellationToken, JoinHandle<io::Result<()>>)>,
}

impl Running {
    /// The address the SOCKS listener is bound to (useful with port 0).
    pub fn socks_addr(&self) -> SocketAddr {
        self.socks_addr
    }

    /// The address the management API listens on, when `api.enabled`.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// The upstream connection pool, when `server.pool.enabled`.
    pub fn pool(&self) -> Option<&ConnectionPool> {
        self.pool.as_ref()
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Reads the access rules again (see `AclControl::reload`); `trigger` names
    /// what asked, for the log.
    pub fn reload_acl(&self, trigger: &str) -> Result<Reloaded, ReloadError> {
        self.acl.reload(trigger)
    }

    /// Loads every TLS certificate, key and client CA file again (SOCKS and API);
    /// a configuration whose new files cannot be used stays as it was. The first
    /// failure is returned after all were tried.
    pub fn reload_tls(&self, trigger: &str) -> Result<(), crate::tls::TlsError> {
        let mut first = Ok(());
        for (tls, _) in &self.tls {
            if let Err(e) = reload::reload_tls(tls, &self.telemetry, trigger) {
                first = first.and(Err(e));
            }
        }
        first
    }

    /// Stops the SOCKS server (see `server::Running::shutdown`), then writes every
    /// queued session record, then stops the API (last, so it can be watched).
    pub async fn shutdown(self) -> ShutdownReport {
        self.watch.abort();
        for (_, watch) in &self.tls {
            watch.abort();
        }
        let report = self.server.shutdown().await;
        if let Some(sessions) = self.sessions {
            let _ = tokio::task::spawn_blocking(move || sessions.shutdown()).await;
        }
        if let Some((shutdown, task)) = self.api {
            shutdown.cancel();
            // Each connection finishes the response it is writing; a client that
            // stops reading one must not hold the process.
            let _ = tokio::time::timeout(API_SHUTDOWN_LIMIT, task).await;
        }
        report
    }
}
