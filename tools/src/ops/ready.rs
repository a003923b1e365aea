//! Readiness: `GET /ready` answers 200 only when this process can do its work now, else 503
//! with every check and, for each failing one, what to do.
//!
//! | check | roles | fails when |
//! |---|---|---|
//! | `broker` | up, consume, ingest | no metadata answer within 1 s, or the input topic is missing (cached ~1 s) |
//! | `store` | up, consume, serve | a point read does not succeed within 2 s |
//! | `consumers_running` | up, consume | the consume loop stopped (an error it could not retry) |
//! | `consumers_assigned` | up, consume | no partition is assigned (yet) |
//! | `consumers_not_paused` | up, consume | an operator paused them (`POST /v1/admin/consumers/pause`) |
//! | `consumer_lag` | up, consume | a partition is more than `--ready-max-lag` records behind |
//!
//! `/health` stays 200 while the process lives: a load balancer uses `/ready`, a supervisor
//! `/health`. Non-goals: checking other processes (each role reports for itself).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use tidings_consumers::steer::{Monitor, PartitionLag};
use tidings_core::keys::meta;
use tidings_producers::KafkaConfig;

use super::Ops;

/// How long a broker answer is reused.
const BROKER_CACHE: Duration = Duration::from_secs(1);
/// How long a metadata request may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the store read may take.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: String) -> Self {
        Check {
            name,
            ok: true,
            detail,
            fix: None,
        }
    }

    fn fail(name: &'static str, detail: String, fix: impl Into<String>) -> Self {
        Check {
            name,
            ok: false,
            detail,
            fix: Some(fix.into()),
        }
    }
}

/// Asks the brokers for metadata; answers are cached for [`BROKER_CACHE`].
pub struct BrokerProbe {
    client: BaseConsumer,
    bootstrap: String,
    topic: String,
    cache: tokio::sync::Mutex<Option<(Instant, Check)>>,
}

impl std::fmt::Debug for BrokerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerProbe")
            .field("bootstrap", &self.bootstrap)
            .field("topic", &self.topic)
            .finish()
    }
}

impl BrokerProbe {
    /// A probe of `kafka` that also requires `topic` to exist.
    pub fn new(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<Self> {
        let client: BaseConsumer = kafka
            .client()
            .create()
            .map_err(|e| anyhow::anyhow!("cannot create the readiness Kafka client: {e}"))?;
        Ok(BrokerProbe {
            client,
            bootstrap: kafka.brokers.clone(),
            topic: topic.to_owned(),
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// The broker check (a fresh answer at most every [`BROKER_CACHE`]).
    pub async fn check(self: &Arc<Self>) -> Check {
        let mut cached = self.cache.lock().await;
        if let Some((at, c)) = cached.as_ref() {
            if at.elapsed() < BROKER_CACHE {
                return c.clone();
            }
        }
        let me = self.clone();
        let c = tokio::task::spawn_blocking(move || me.ask())
            .await
            .unwrap_or_else(|e| {
                Check::fail(
                    "broker",
                    format!("the check failed: {e}"),
                    "see the process log",
                )
            });
        *cached = Some((Instant::now(), c.clone()));
        c
    }

    fn ask(&self) -> Check {
        // Drain the client's events (connection errors) so they do not pile up.
        let _ = self.client.poll(Duration::ZERO);
        let started = Instant::now();
        let md =
            match self
                .client
                .fetch_metadata(Some(&self.topic), BROKER_TIMEOUT)
            {
                Ok(md) => md,
                Err(e) => return Check::fail(
                    "broker",
                    format!(
                        "no metadata answer from {} within {BROKER_TIMEOUT:?}: {e}",
                        self.bootstrap
                    ),
                    "check that the Kafka brokers are up and reachable from this host (--brokers)",
                ),
            };
        let took = started.elapsed().as_millis();
        match md.topics().iter().find(|t| t.name() == self.topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Check::pass(
                "broker",
                format!(
                    "{} answered in {took} ms; {} has {} partitions",
                    self.bootstrap,
                    self.topic,
                    t.partitions().len()
                ),
            ),
            _ => Check::fail(
                "broker",
                format!(
                    "{} answered, but topic {} does not exist",
                    self.bootstrap, self.topic
                ),
                "create the topics: tidings topics create --brokers …",
            ),
        }
    }
}

/// Every check that applies to this process, in table order.
pub async fn checks(ops: &Ops) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some(b) = &ops.broker {
        out.push(b.check().await);
    }
    if let Some(store) = &ops.store {
        let store = store.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<(), String> {
            store
                .snapshot()
                .and_then(|v| v.get(&meta::active()))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        out.push(match tokio::time::timeout(STORE_TIMEOUT, read).await {
            Ok(Ok(Ok(()))) => Check::pass("store", "a point read succeeded".into()),
            Ok(Ok(Err(e))) => Check::fail(
                "store",
                format!("a point read failed: {e}"),
                "check the store (its disk, or the FoundationDB cluster and its cluster file)",
            ),
            Ok(Err(e)) => Check::fail(
                "store",
                format!("the read task failed: {e}"),
                "see the process log",
            ),
            Err(_) => Check::fail(
                "store",
                format!("a point read did not finish within {STORE_TIMEOUT:?}"),
                "check the store's health and load (FoundationDB: fdbcli status)",
            ),
        });
    }
    if let Some(m) = &ops.consumers {
        out.extend(consumer_checks(&ConsumerView::of(m), ops.ready_max_lag));
    }
    out
}

/// What the consumer checks look at.
#[derive(Debug)]
struct ConsumerView {
    running: bool,
    parts: Vec<PartitionLag>,
    pause_requested: bool,
    paused: bool,
}

impl ConsumerView {
    fn of(m: &Monitor) -> Self {
        ConsumerView {
            running: m.running(),
            parts: m.partitions(),
            pause_requested: m.control().pause_requested(),
            paused: m.paused(),
        }
    }
}

fn consumer_checks(v: &ConsumerView, max_lag: u64) -> Vec<Check> {
    let running = if v.running {
        Check::pass("consumers_running", "the consume loop runs".into())
    } else {
        Check::fail(
            "consumers_running",
            "the consume loop stopped".into(),
            "read the process log for the error, then restart the process",
        )
    };
    let assigned = if v.parts.is_empty() {
        Check::fail(
            "consumers_assigned",
            "no partition is assigned to this process".into(),
            "wait for the group to assign partitions (a new group's first join takes a few seconds); if it lasts, check that the topics exist and that there are no more consumers than partitions",
        )
    } else {
        Check::pass(
            "consumers_assigned",
            format!("{} partitions assigned", v.parts.len()),
        )
    };
    let not_paused = if v.pause_requested || v.paused {
        Check::fail(
            "consumers_not_paused",
            if v.paused {
                "the consumers are paused by an operator: nothing is applied".into()
            } else {
                "an operator asked the consumers to pause (the batch in flight finishes first)"
                    .into()
            },
            "resume them when the reason is gone: POST /v1/admin/consumers/resume",
        )
    } else {
        Check::pass("consumers_not_paused", "consuming".into())
    };
    let worst = v
        .parts
        .iter()
        .filter_map(|p| p.lag.map(|l| (l.max(0).unsigned_abs(), p)))
        .max_by_key(|(l, _)| *l);
    let lag = match worst {
        Some((lag, p)) if lag > max_lag => Check::fail(
            "consumer_lag",
            format!(
                "{}/{} is {lag} records behind, more than --ready-max-lag {max_lag}",
                p.topic, p.partition
            ),
            "wait for the consumers to catch up; if the lag keeps growing, add consumer processes (and partitions) or look for a slow store",
        ),
        Some((lag, p)) => Check::pass(
            "consumer_lag",
            format!(
                "largest lag {lag} records ({}/{}), bound {max_lag}",
                p.topic, p.partition
            ),
        ),
        None => Check::pass("consumer_lag", "no fetch answer yet, lag unknown".into()),
    };
    vec![running, assigned, not_paused, lag]
}

/// `GET /ready`.
pub async fn handler(State(ops): State<Arc<Ops>>) -> Response {
    let checks = checks(&ops).await;
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    metrics::gauge!("tidings_ready").set(if ready { 1.0 } else { 0.0 });
    (
        status,
        Json(Ready {
            ready,
            role: ops.role.name(),
            checks,
        }),
    )
        .into_response()
}

/// The body of a `/ready` answer (fields in this order).
#[derive(Debug, Serialize)]
struct Ready {
    ready: bool,
    role: &'static str,
    checks: Vec<Check>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(partition: i32, lag: Option<i64>) -> PartitionLag {
        PartitionLag {
            topic: "tidings.activities".into(),
            partition,
            stored: Some(10),
            high_watermark: lag.map(|l| 10 + l),
            lag,
        }
    }

    fn view(parts: Vec<PartitionLag>) -> ConsumerView {
        ConsumerView {
            running: true,
            parts,
            pause_requested: false,
            paused: false,
        }
    }

    fn failing(checks: &[Check]) -> Vec<&'static str> {
        checks.iter().filter(|c| !c.ok).map(|c| c.name).collect()
    }

    #[test]
    fn lag_above_the_bound_fails_naming_the_partition() {
        let v = view(vec![part(0, Some(3)), part(1, Some(7)), part(2, None)]);
        assert!(failing(&consumer_checks(&v, 7)).is_empty());
        let c = consumer_checks(&v, 6);
        assert_eq!(failing(&c), vec!["consumer_lag"]);
        assert_eq!(
            c[3].detail,
            "tidings.activities/1 is 7 records behind, more than --ready-max-lag 6"
        );
        assert!(c[3].fix.as_deref().unwrap().contains("catch up"));
        let unknown = consumer_checks(&view(vec![part(0, None)]), 0);
        assert!(failing(&unknown).is_empty(), "unknown lag does not fail");
    }

    #[test]
    fn unassigned_paused_and_stopped_consumers_fail() {
        assert_eq!(
            failing(&consumer_checks(&view(vec![]), 10)),
            vec!["consumers_assigned"]
        );
        let mut v = view(vec![part(0, Some(0))]);
        v.pause_requested = true;
        let c = consumer_checks(&v, 10);
        assert_eq!(failing(&c), vec!["consumers_not_paused"]);
        assert!(c[2].detail.contains("asked the consumers to pause"));
        v.paused = true;
        v.running = false;
        let c = consumer_checks(&v, 10);
        assert_eq!(
            failing(&c),
            vec!["consumers_running", "consumers_not_paused"]
        );
        assert!(c[2].detail.contains("paused by an operator"));
    }
}
