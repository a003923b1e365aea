//! Delivering the error digest on a schedule: `tidings up --errors-webhook URL
//! --errors-every-s N` POSTs a [`Digest`] as JSON every N seconds.
//!
//! Each digest covers the time since the last delivered one: the dead letters appended to the
//! topic since the last read (the first read takes those stamped since the process started)
//! and the error log's entries of the period. An empty digest is not sent (and counts as
//! delivered). A delivery that fails — no answer within 10 s, or a non-2xx status — is logged
//! and retried with the next digest, which then covers both periods.
//!
//! Metrics: `tidings_error_digests_total{outcome}` (`sent`, `empty`, `failed`).
//! Non-goals: TLS (the binary carries no TLS stack: post to an `http://` endpoint, such as a
//! local relay), retries within a period, signing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tidings_producers::KafkaConfig;

use super::digest::{read_dead_letters, Digest};
use super::errlog;

/// How long a POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// Log entries this recent are left for the next digest (their writers may still be writing).
const SETTLE_MS: i64 = 1_000;

/// Flags of `tidings up` for the digest webhook.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// POST the error digest (JSON) to this http:// URL every --errors-every-s seconds;
    /// empty digests are not sent.
    #[arg(long, env = "TIDINGS_ERRORS_WEBHOOK")]
    pub errors_webhook: Option<String>,
    /// Seconds between digests; each covers the time since the last delivered one.
    #[arg(long, env = "TIDINGS_ERRORS_EVERY_S", default_value_t = 3_600)]
    pub errors_every_s: u64,
}

/// Where the digest's sources are.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The brokers.
    pub kafka: KafkaConfig,
    /// The dead letter topic.
    pub dlq: String,
    /// Read partitions from offset 0 (tansu 0.6, see `LogReader::open`).
    pub reread: bool,
    /// The error log.
    pub errors_log: PathBuf,
}

impl WebhookArgs {
    /// Starts the schedule on its own thread (nothing without --errors-webhook).
    pub fn spawn(
        &self,
        src: Sources,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
        let Some(url) = self.errors_webhook.clone() else {
            return Ok(None);
        };
        let parsed = reqwest::Url::parse(&url)
            .with_context(|| format!("--errors-webhook {url:?}: expected an http:// URL"))?;
        if parsed.scheme() != "http" {
            bail!("--errors-webhook {url:?}: only http:// URLs are supported (this build has no TLS); post to a local relay that forwards over https");
        }
        if self.errors_every_s == 0 {
            bail!("--errors-every-s must be at least 1");
        }
        let every = Duration::from_secs(self.errors_every_s);
        let client = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .build()
            .context("building the webhook HTTP client")?;
        let handle = std::thread::Builder::new()
            .name("error-digest".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "error digest: cannot start; no digests will be sent");
                        return;
                    }
                };
                let mut s = Schedule {
                    from_ms: errlog::now_ms(),
                    cursor: BTreeMap::new(),
                };
                let mut next = Instant::now() + every;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if Instant::now() < next {
                        continue;
                    }
                    next = Instant::now() + every;
                    s.once(&src, &url, every, |d| rt.block_on(post(&client, &url, d)));
                }
                // Stopping: the period since the last digest goes out now rather than never
                // (the next process starts its own from its start).
                s.once(&src, &url, every, |d| rt.block_on(post(&client, &url, d)));
            })
            .context("starting the error digest thread")?;
        Ok(Some(handle))
    }
}

/// What was delivered so far.
struct Schedule {
    /// Start of the next digest's period.
    from_ms: i64,
    /// Where the next dead letter read starts (empty: the first read).
    cursor: BTreeMap<(String, i32), i64>,
}

impl Schedule {
    fn once(
        &mut self,
        src: &Sources,
        url: &str,
        every: Duration,
        send: impl FnOnce(&Digest) -> Result<(), String>,
    ) {
        let to_ms = errlog::now_ms() - SETTLE_MS;
        // After the first read the offsets say what is new; the time filter would lose letters
        // stamped just before the previous read but appended after it.
        let (lo, hi) = if self.cursor.is_empty() {
            (self.from_ms, i64::MAX)
        } else {
            (i64::MIN, i64::MAX)
        };
        let (dead, ends) = match read_dead_letters(
            &src.kafka,
            &src.dlq,
            &self.cursor,
            src.reread,
            lo,
            hi,
        ) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "error digest: cannot read the dead letter topic; trying again at the next interval");
                return;
            }
        };
        let (logged, bad) = match errlog::read(&src.errors_log, self.from_ms, to_ms) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, path = %src.errors_log.display(), "error digest: cannot read the error log; sending dead letters only");
                (Vec::new(), 0)
            }
        };
        let window = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        let d = Digest::build(self.from_ms, to_ms, window, &dead, &logged, bad);
        let outcome = if d.is_empty() {
            "empty"
        } else {
            match send(&d) {
                Ok(()) => {
                    tracing::info!(dead_letters = d.dead_letters.total, logged = d.logged.total, %url, "error digest sent");
                    "sent"
                }
                Err(e) => {
                    tracing::warn!(error = %e, %url, "error digest not delivered; its period is sent again with the next digest");
                    "failed"
                }
            }
        };
        metrics::counter!("tidings_error_digests_total", "outcome" => outcome).increment(1);
        if outcome != "failed" {
            self.from_ms = to_ms;
            self.cursor = ends;
        }
    }
}

async fn post(client: &reqwest::Client, url: &str, d: &Digest) -> Result<(), String> {
    let resp = client
        .post(url)
        .json(d)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("POST {url}: answered {}", resp.status()))
    }
}
