//! The operations surface every long-running role serves beside its own routes:
//! `/health`, `/ready` ([`ready`]), `/metrics` (Prometheus), the admin API ([`admin`]) and
//! request latency per route ([`http_metrics`]); plus the store-size gauge, the error log
//! ([`errlog`]) and the error digest ([`digest`]).
//!
//! Layout: [`Ops`] says what one process runs (its role, its consumers, its store, its
//! brokers) and is shared by the readiness checks and the admin API; [`OpsArgs`] are the flags
//! every role takes; [`app`] wraps a role's routes with everything above.
//!
//! Why one module: `tidings up`, `consume`, `serve` and `ingest` must expose the same
//! surface, so it is built once. Non-goals: TLS (put a proxy in front), and one process
//! reporting for another.

pub mod admin;
pub mod digest;
pub mod errlog;
pub mod http_metrics;
pub mod ready;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use clap::Args;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tidings_consumers::steer::Monitor;
use tidings_core::control::{Control, Feature, Side, FEATURES};
use tidings_store::Store;

use crate::config::Config;

/// What a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `tidings up`: ingest, consumers and query in one process.
    Up,
    /// `tidings consume`: the consumers.
    Consume,
    /// `tidings serve`: the query service.
    Serve,
    /// `tidings ingest`: the HTTP ingest gateway.
    Ingest,
}

impl Role {
    /// Its name in `/ready`, the admin API and logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Up => "up",
            Role::Consume => "consume",
            Role::Serve => "serve",
            Role::Ingest => "ingest",
        }
    }

    fn serves_queries(self) -> bool {
        matches!(self, Role::Up | Role::Serve)
    }
}

/// What one process runs, for readiness and the admin API.
#[derive(Debug)]
pub struct Ops {
    /// The role.
    pub role: Role,
    /// The switches of this process (shared with its consumers and query routes).
    pub control: Arc<Control>,
    /// The consume loop, if this process runs one.
    pub consumers: Option<Monitor>,
    /// The store, if this process uses one.
    pub store: Option<Arc<dyn Store>>,
    /// The brokers, if this process talks to Kafka.
    pub broker: Option<Arc<ready::BrokerProbe>>,
    /// `/ready` fails above this lag (records, any one partition).
    pub ready_max_lag: u64,
}

impl Ops {
    /// Whether this process honours feature `f`.
    pub fn applies(&self, f: &Feature) -> bool {
        match f.side {
            Side::Consumers => self.consumers.is_some(),
            Side::Query => self.role.serves_queries(),
        }
    }

    /// Exports `tidings_feature_down{feature}` for every feature this process honours.
    fn export_features(&self) {
        for f in FEATURES.iter().filter(|f| self.applies(f)) {
            export_feature(f.name, self.control.is_down(f.name).unwrap_or(false));
        }
    }
}

/// Sets `tidings_feature_down{feature}` to 1 (down) or 0.
fn export_feature(name: &'static str, down: bool) {
    metrics::gauge!("tidings_feature_down", "feature" => name).set(if down { 1.0 } else { 0.0 });
}

/// Flags every long-running role takes.
#[derive(Debug, Clone, Args)]
pub struct OpsArgs {
    /// Config file (TOML): `[admin]`, `[query]` (see `tools/src/config.rs`).
    #[arg(long, env = "TIDINGS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Bearer token of the admin API (`/v1/admin/…`); overrides `[admin] token`. Prefer the
    /// environment variable (a flag shows in `ps`). Without any, the admin API answers 403.
    #[arg(long, env = "TIDINGS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Append WARN and ERROR logs as JSON lines to this file, for `tidings errors` and the
    /// digest webhook (default: DATA/errors.jsonl for roles with --data).
    #[arg(long, env = "TIDINGS_ERRORS_LOG")]
    pub errors_log: Option<PathBuf>,
}

impl OpsArgs {
    /// The config file's contents (the defaults without `--config`).
    pub fn load_config(&self) -> anyhow::Result<Config> {
        Config::load(self.config.as_deref())
    }

    /// The admin token: the flag or environment, else the config file's; `None` (also for an
    /// empty value, as `TIDINGS_ADMIN_TOKEN=` in a compose file leaves it): the API is off.
    pub fn token(&self, cfg: &Config) -> Option<Arc<str>> {
        [self.admin_token.as_deref(), cfg.admin.token.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .find(|t| !t.is_empty())
            .map(Arc::from)
    }
}

/// Bucket bounds (seconds) of every `*_seconds` histogram: real Prometheus histograms, so
/// several instances can be aggregated (`histogram_quantile(sum by (le) (rate(…)))`).
const SECONDS_BUCKETS: [f64; 16] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Installs the process's Prometheus recorder.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")
}

/// `routes` with `/health`, `/ready`, `/metrics` and the admin API (plus `admin_extra`
/// routes under `/v1/admin/`, behind the same token), every route timed.
pub fn app(
    routes: Router,
    ops: Arc<Ops>,
    token: Option<Arc<str>>,
    admin_extra: Vec<Router>,
    metrics: PrometheusHandle,
) -> Router {
    ops.export_features();
    if token.is_none() {
        tracing::info!("the admin API is off (no token configured)");
    }
    routes
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.render() }
            }),
        )
        .merge(
            Router::new()
                .route("/ready", get(ready::handler))
                .with_state(ops.clone()),
        )
        .merge(admin::router(ops, token, admin_extra))
        .layer(axum::middleware::from_fn(http_metrics::track))
}

/// Refreshes `tidings_store_bytes` (the store's own size estimate) now and every `every`.
pub fn spawn_store_size(rt: &tokio::runtime::Runtime, store: Arc<dyn Store>, every: Duration) {
    rt.spawn(async move {
        loop {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.estimated_size(&[], &[0xff])).await {
                Ok(Ok(bytes)) => metrics::gauge!("tidings_store_bytes").set(bytes as f64),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot estimate the store size"),
                Err(_) => return,
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// How often the store size is refreshed.
pub const STORE_SIZE_EVERY: Duration = Duration::from_secs(15);
