//! `--admin-listen`: the admin listener (`crates/admin`) as every long-running role starts it,
//! with who may read `/metrics`, the process's own metrics, and the web console
//! (`crates/console`) as a Kafka client of the role's cluster. The default address is Redpanda's
//! admin port on loopback; when a role finds it taken (a `serve` and a `query run` on one
//! machine), it runs without an admin listener and says so, where an address given on the
//! command line that cannot be bound fails the start like any other listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use clap::Args;
use tidewater_admin::{AdminState, MetricsAccess, MetricsToken, Readiness};
use tidewater_security::sasl::{CredentialSource, ScramCredential, ScramMechanism};
use tidewater_security::tls::{ClientAuth, TlsIdentity};

use crate::cli::ListenAddress;

/// Where the admin listener is unless `--admin-listen` says otherwise.
const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9644";
/// The bearer token `/metrics` then requires (never logged).
const METRICS_TOKEN_VARIABLE: &str = "TIDEWATER_METRICS_TOKEN";

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// Address of the admin listener: the web console at /, its JSON API under /api/, /metrics
    /// (Prometheus text format), /health/live and /health/ready; "none" turns it off. The default, 127.0.0.1:9644, is skipped with a
    /// warning when another process holds it; an address given here must bind. /metrics then
    /// requires TIDEWATER_METRICS_TOKEN as a bearer token when that is set, and, in `serve` with
    /// authenticating Kafka listeners, the token or a SCRAM user's password (HTTP Basic).
    #[arg(long, env = "TIDEWATER_ADMIN_LISTEN")]
    pub(crate) admin_listen: Option<ListenAddress>,
    /// Serve the admin listener over HTTPS with this certificate chain (PEM, leaf first), with
    /// --admin-tls-key. Needed for an address beyond loopback, where a token or a password
    /// would otherwise cross the network in clear (unless --allow-insecure-listeners).
    #[arg(long, env = "TIDEWATER_ADMIN_TLS_CERT", requires = "admin_tls_key")]
    pub(crate) admin_tls_cert: Option<PathBuf>,
    /// The private key of --admin-tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TIDEWATER_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
    pub(crate) admin_tls_key: Option<PathBuf>,
}

impl AdminArgs {
    /// The HTTPS configuration of `--admin-tls-cert`/`--admin-tls-key`, if given.
    fn tls(&self) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        let (Some(cert), Some(key)) = (&self.admin_tls_cert, &self.admin_tls_key) else {
            return Ok(None);
        };
        let identity = TlsIdentity::load(cert, key, None).context("the admin listener's certificate")?;
        let config = identity
            .server_config(ClientAuth::None, &[b"http/1.1"])
            .context("the admin listener's TLS configuration")?;
        Ok(Some(config))
    }
}

/// A running admin listener; stops when dropped.
pub(crate) struct AdminListener {
    pub(crate) readiness: Arc<Readiness>,
    _stop: tokio::sync::watch::Sender<bool>,
    _process: Arc<tidewater_metrics::ProcessCollector>,
}

/// SCRAM credentials that become known after the listener started (the broker's, once its
/// logs are recovered): until then no user is known and Basic authentication fails.
#[derive(Debug, Default)]
pub(crate) struct LateCredentials(OnceLock<Arc<dyn CredentialSource>>);

impl LateCredentials {
    pub(crate) fn set(&self, credentials: Arc<dyn CredentialSource>) {
        let _ = self.0.set(credentials);
    }
}

impl CredentialSource for LateCredentials {
    fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        self.0.get()?.scram_credential(user, mechanism)
    }
}

/// The metrics token from the environment, if one is set.
pub(crate) fn metrics_token() -> anyhow::Result<Option<MetricsToken>> {
    match std::env::var_os(METRICS_TOKEN_VARIABLE) {
        None => Ok(None),
        Some(value) if value.is_empty() => anyhow::bail!("{METRICS_TOKEN_VARIABLE} is set but empty"),
        Some(value) => Ok(Some(MetricsToken::new(value.into_encoded_bytes()))),
    }
}

/// The admin listener of a role that is a Kafka client (`gateway`, `query run`, `trigger run`, `capture
/// run`). Such a role keeps no users, so `/metrics` and the console are open on loopback unless
/// a token is set, and the console reads the role's cluster with the role's own identity. Ready
/// once the caller says its work is running.
pub(crate) async fn start_for_client_role(
    args: &AdminArgs,
    cluster: &tidewater_client::ClusterConfig,
) -> anyhow::Result<Option<AdminListener>> {
    let access = match metrics_token()? {
        Some(token) => MetricsAccess::Protected { token: Some(token), users: None },
        None => MetricsAccess::Open,
    };
    let console = tidewater_console::ConsoleCluster { anyone: cluster.clone(), users: None };
    start(args, access, console, false, "starting").await
}

impl AdminListener {
    pub(crate) fn set_ready(listener: &Option<AdminListener>) {
        if let Some(listener) = listener {
            listener.readiness.set_ready();
        }
    }
}

/// Binds and starts the admin listener (inside a tokio runtime), not ready for `starting` until
/// the role says so. `None` when it is turned off or the default address is taken.
pub(crate) async fn start(
    args: &AdminArgs,
    access: MetricsAccess,
    console: tidewater_console::ConsoleCluster,
    allow_insecure: bool,
    starting: &str,
) -> anyhow::Result<Option<AdminListener>> {
    let (address, chosen) = match args.admin_listen {
        Some(ListenAddress(None)) => return Ok(None),
        Some(ListenAddress(Some(address))) => (address, true),
        None => (DEFAULT_ADMIN_ADDRESS.parse::<SocketAddr>().expect("a valid default address"), false),
    };
    let tls = args.tls()?;
    let loopback = address.ip().is_loopback();
    anyhow::ensure!(
        loopback || !matches!(access, MetricsAccess::Open) || allow_insecure,
        "the admin listener on {address} would show /metrics and the console to anyone who can reach it: set \
         {METRICS_TOKEN_VARIABLE}, bind it to loopback, or pass --allow-insecure-listeners"
    );
    anyhow::ensure!(
        loopback || tls.is_some() || allow_insecure,
        "the admin listener on {address} would take its token and users' passwords in clear over the network: \
         give it --admin-tls-cert and --admin-tls-key, bind it to loopback, or pass --allow-insecure-listeners"
    );
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) if !chosen => {
            tracing::warn!(
                %address,
                %error,
                "the admin listener's default address is taken (another tidewater?); running without \
                 /metrics and /health (--admin-listen HOST:PORT picks another)"
            );
            return Ok(None);
        }
        Err(error) => {
            return Err(error).with_context(|| {
                format!("binding the admin listener to {address} (--admin-listen none turns it off)")
            })
        }
    };
    let bound = listener.local_addr().context("reading the admin listener's address")?;
    let readiness = Arc::new(Readiness::new(starting));
    let process = Arc::new(tidewater_metrics::ProcessCollector::default());
    let registry = tidewater_metrics::global();
    let process_collector: Arc<dyn tidewater_metrics::Collect> = process.clone();
    registry.add_collector(Arc::downgrade(&process_collector));
    let console: Arc<dyn tidewater_admin::Console> = tidewater_console::ConsoleApi::new(console, registry);
    let state = Arc::new(AdminState {
        registry,
        readiness: readiness.clone(),
        metrics_access: access,
        console: Some(console),
        loopback_only: loopback,
        tls: tls.clone(),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(tidewater_admin::serve(listener, state, stopped));
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(admin = %bound, "admin listener: the console at {scheme}://{bound}/, /api/, /metrics, /health/live, /health/ready");
    Ok(Some(AdminListener { readiness, _stop: stop, _process: process }))
}
