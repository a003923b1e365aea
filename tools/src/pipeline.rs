//! The live pipeline's subcommands: `tidings up` (everything in one process), the roles as
//! separate processes (`tidings consume`, `tidings serve`, `tidings ingest`), and
//! `tidings topics create`. Every long-running role serves the operations surface of
//! [`crate::ops`] (`/health`, `/ready`, `/metrics`, `/v1/admin/...`).
//!
//! `up` and `consume` run the processor chain of `--config` and watch the file: an edit swaps
//! the chain between batches (`crate::chain`); `up` also serves `POST /v1/admin/pipeline`
//! behind the admin token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tidings_consumers::apply::{Applier, Stats};
use tidings_consumers::kafka::{self, Assignment, ConsumerConfig};
use tidings_consumers::maintain::{MaintainConfig, Maintainer};
use tidings_consumers::project::Projector;
use tidings_core::keys::meta;
use tidings_query::http::QueryOptions;

use crate::chain::{EnsureTopics, Reloader};
use crate::config::Config;
use crate::ops::ready::BrokerProbe;
use crate::ops::{self, webhook, webhook::WebhookArgs, Ops, OpsArgs, Role};
use tidings_consumers::chain::ChainHandle;
use tidings_core::control::Control;
use tidings_core::write::decode_i64;
use tidings_producers::broker::{BrokerStorage, LocalBroker};
use tidings_producers::topics::{self, Created, DEFAULT_PARTITIONS};
use tidings_producers::{KafkaConfig, Producer, ProducerConfig, Topics};
use tidings_store::rocks::{RocksOptions, RocksStore};
use tidings_store::Store;

/// How to reach Kafka.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (`host:port,…`). Without it, `up` starts the local broker.
    #[arg(long, env = "TIDINGS_BROKERS")]
    pub brokers: Option<String>,
    /// Topic name prefix: topics are PREFIX.activities, PREFIX.graph, PREFIX.dlq.
    #[arg(long, env = "TIDINGS_TOPIC_PREFIX", default_value = "tidings")]
    pub topic_prefix: String,
    /// Extra librdkafka setting, KEY=VALUE (repeatable), e.g. security.protocol=SASL_SSL.
    #[arg(long = "kafka-opt", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub kafka_opts: Vec<(String, String)>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE (a librdkafka property), got {s:?}"))?;
    if k.is_empty() {
        return Err(format!(
            "expected KEY=VALUE with a non-empty key, got {s:?}"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

impl KafkaArgs {
    fn config(&self, brokers: String) -> KafkaConfig {
        KafkaConfig {
            brokers,
            extra: self.kafka_opts.clone(),
        }
    }

    pub(crate) fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }

    pub(crate) fn required(&self) -> anyhow::Result<KafkaConfig> {
        match &self.brokers {
            Some(b) => Ok(self.config(b.clone())),
            None => bail!("--brokers host:port (or TIDINGS_BROKERS) is required for this command"),
        }
    }
}

/// Consumer tunables shared by `up` and `consume`.
#[derive(Debug, Clone, Args)]
pub struct ConsumeArgs {
    /// Consumer group; offsets are stored under this name.
    #[arg(long, env = "TIDINGS_GROUP", default_value = "tidings-fanout")]
    pub group: String,
    /// Partition ownership: `group` (Kafka rebalancing) or static `I/N` (partitions p with
    /// p % N == I).
    #[arg(long, env = "TIDINGS_INSTANCE", default_value = "group")]
    pub instance: Assignment,
    #[command(flatten)]
    pub projector: ProjectorArgs,
    /// Most records applied per poll.
    #[arg(long, default_value_t = 1_000)]
    pub max_batch: usize,
    /// Kafka session timeout in ms (a new group's first join waits about half of it on tansu).
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: u64,
    /// After a restart or rebalance, re-read partitions from the start of the log and skip
    /// what the store has, instead of fetching from the stored offset. Needed with tansu 0.6
    /// (it skips the rest of a record batch when a fetch starts inside one); `tidings up`
    /// turns it on for its local broker.
    #[arg(long, env = "TIDINGS_REREAD_FROM_START")]
    pub reread_from_start: bool,
    /// Entries each feed keeps; older ones are trimmed in the background (0: never trim).
    #[arg(long, env = "TIDINGS_TRIM_TO", default_value_t = 1_000)]
    pub trim_to: usize,
    /// Pause between background maintenance passes (trimming, unfollow cleanup), in ms.
    #[arg(long, default_value_t = 1_000)]
    pub maintain_interval_ms: u64,
    /// `/ready` fails while any owned partition is more than this many records behind.
    #[arg(long, env = "TIDINGS_READY_MAX_LAG", default_value_t = 10_000)]
    pub ready_max_lag: u64,
}

/// The tunables that shape a projection: the live consumers, `rebuild`, `restore` and
/// `verify --rebuild` must use the same ones, or they build different projections.
#[derive(Debug, Clone, Args)]
pub struct ProjectorArgs {
    /// Authors with more followers than this are not pushed (hybrid fan-out).
    #[arg(long, env = "TIDINGS_HYBRID_THRESHOLD", default_value_t = 10_000)]
    pub hybrid_threshold: u64,
    /// Most index entries one store batch writes for one event; bigger fan-outs are split.
    #[arg(long, env = "TIDINGS_FANOUT_STEP", default_value_t = 5_000)]
    pub fanout_step: usize,
    /// Recent items of a followee copied into a new follower's home feed.
    #[arg(long, env = "TIDINGS_BACKFILL", default_value_t = 100)]
    pub backfill: usize,
}

impl ProjectorArgs {
    /// The projector of projection `p` with these tunables.
    pub fn projector(&self, p: tidings_core::keys::Projection) -> anyhow::Result<Projector> {
        if self.fanout_step == 0 {
            bail!("--fanout-step must be at least 1");
        }
        let mut projector = Projector::new(p);
        projector.fanout.hybrid_threshold = self.hybrid_threshold;
        projector.fanout.max_entries_per_step = self.fanout_step;
        projector.backfill = self.backfill;
        Ok(projector)
    }
}

impl ConsumeArgs {
    /// The applier of the live consumers; `control` carries the fan-out switches, `chain` the
    /// processor chain (swappable between batches).
    fn applier(
        &self,
        store: Arc<dyn Store>,
        control: Arc<Control>,
        chain: ChainHandle,
    ) -> anyhow::Result<Applier> {
        let active = store
            .get(&meta::active())
            .context("reading the active projection")?
            .map_or(meta::DEFAULT_PROJECTION, |v| decode_i64(&v));
        let mut projector = self.projector.projector(active)?;
        projector.control = control;
        Ok(Applier::new(store, projector, self.group.clone()).with_chain(chain))
    }

    /// Starts feed maintenance (trimming, unfollow cleanup) on its own thread.
    fn maintain(
        &self,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
        let cfg = MaintainConfig {
            max_entries: self.trim_to,
            interval: Duration::from_millis(self.maintain_interval_ms.max(10)),
            ..MaintainConfig::default()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Maintainer::new(store, cfg)
            .spawn(stop.clone())
            .context("starting the maintenance thread")?;
        Ok((stop, handle))
    }

    fn config(&self, kafka: KafkaConfig, topics: Topics, control: Arc<Control>) -> ConsumerConfig {
        let mut c = ConsumerConfig::new(kafka);
        c.control = control;
        c.topics = topics;
        c.group = self.group.clone();
        c.assignment = self.instance;
        c.max_batch = self.max_batch.max(1);
        c.session_timeout = Duration::from_millis(self.session_timeout_ms);
        c.reread_from_start = self.reread_from_start;
        c
    }
}

/// `tidings topics …`
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Creates tidings' topics that do not exist yet (and, with --config, the processor
    /// chain's side-output topics).
    Create {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Partitions of each new topic.
        #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
        partitions: i32,
        /// Config file: also create the topics its `[pipeline]` sends side outputs to.
        #[arg(long, env = "TIDINGS_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Flags of `tidings consume`.
#[derive(Debug, Args)]
pub struct ConsumeCmd {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    consume: ConsumeArgs,
    /// Data directory: the embedded store (DATA/store, unless --store) and the error log
    /// (DATA/errors.jsonl).
    #[arg(long, env = "TIDINGS_DATA", default_value = "./data")]
    data: PathBuf,
    /// The store as a URL instead of DATA/store: `rocksdb:PATH` or `fdb:[CLUSTER_FILE]`
    /// (needs the `fdb` build feature).
    #[arg(long, env = "TIDINGS_STORE")]
    store: Option<String>,
    /// Serve /metrics, /health, /ready and the admin API on this address (e.g. 0.0.0.0:9464);
    /// without it, no HTTP server runs.
    #[arg(long, env = "TIDINGS_LISTEN")]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    ops: OpsArgs,
    /// How often the config file is checked for changes (processor chain hot reload), in ms.
    #[arg(long, default_value_t = 1_000)]
    config_poll_ms: u64,
    /// Exit after this many ms without a new record (batch use: catch up, then stop).
    #[arg(long)]
    exit_when_idle_ms: Option<u64>,
    /// Print a JSON progress line to stdout at this interval (ms).
    #[arg(long)]
    progress_ms: Option<u64>,
}

/// Flags of `tidings up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    consume: ConsumeArgs,
    /// Data directory: the embedded store (DATA/store, unless --store), the local broker's log
    /// (DATA/broker) and the error log (DATA/errors.jsonl).
    #[arg(long, env = "TIDINGS_DATA", default_value = "./data")]
    data: PathBuf,
    /// The store as a URL instead of DATA/store: `rocksdb:PATH` or `fdb:[CLUSTER_FILE]`.
    #[arg(long, env = "TIDINGS_STORE")]
    store: Option<String>,
    /// HTTP address of the ingest gateway, the query API, /metrics, /health, /ready and the
    /// admin API.
    #[arg(long, env = "TIDINGS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Partitions of topics `up` creates.
    #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
    partitions: i32,
    /// Port of the local broker (0: a free one).
    #[arg(long, env = "TIDINGS_BROKER_PORT", default_value_t = 0)]
    broker_port: u16,
    /// Keep the local broker's log in memory instead of DATA/broker (faster, not durable).
    #[arg(long)]
    broker_in_memory: bool,
    #[command(flatten)]
    query: QueryArgs,
    #[command(flatten)]
    ops: OpsArgs,
    /// How often the config file is checked for changes (processor chain hot reload), in ms.
    #[arg(long, default_value_t = 1_000)]
    config_poll_ms: u64,
    #[command(flatten)]
    webhook: WebhookArgs,
    #[command(flatten)]
    backups: crate::backup::ScheduleArgs,
}

/// Query-service settings shared by `up` and `serve` (the config file is `--config`).
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Page cache bound in MiB, 0 to turn it off (overrides the config file; default 64).
    #[arg(long, env = "TIDINGS_CACHE_MB")]
    pub cache_mb: Option<usize>,
}

impl QueryArgs {
    /// The query options from the config file and flags; `backfill` is the consumers'.
    pub fn options(
        &self,
        cfg: &Config,
        backfill: usize,
        control: Arc<Control>,
    ) -> anyhow::Result<QueryOptions> {
        let cfg = &cfg.query;
        let mut o = QueryOptions {
            control,
            ..QueryOptions::default()
        };
        if let Some(rules) = cfg.aggregation.clone() {
            o.read.rules = rules;
        }
        if let Some(n) = cfg.max_pulled {
            o.read.max_pulled = n;
        }
        o.read.backfill = backfill;
        if let Some(ms) = cfg.stream_poll_ms {
            anyhow::ensure!(ms > 0, "stream_poll_ms must be at least 1");
            o.stream_poll = Duration::from_millis(ms);
        }
        if let Some(mb) = self.cache_mb.or(cfg.cache_mb) {
            o.cache_bytes = mb << 20;
        }
        Ok(o)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) fn open_store(data: &Path) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(open_rocks(data)?))
}

/// The embedded store itself (for what only RocksDB has, such as waiting for compactions).
pub(crate) fn open_rocks(data: &Path) -> anyhow::Result<RocksStore> {
    let dir = data.join("store");
    let s = RocksStore::open(&dir, RocksOptions::default()).with_context(|| {
        format!(
            "opening the embedded store at {} (is another tidings process using it?)",
            dir.display()
        )
    })?;
    tidings_store::layout::ensure(&s, &dir.display().to_string())?;
    Ok(s)
}

/// `tidings topics create`.
pub fn topics(cmd: TopicsCommand) -> anyhow::Result<()> {
    match cmd {
        TopicsCommand::Create {
            kafka,
            partitions,
            config,
        } => {
            let cfg = kafka.required()?;
            let side = match &config {
                Some(path) => Config::chain(Some(path))?.topics(),
                None => Vec::new(),
            };
            let side: Vec<&str> = side.iter().map(String::as_str).collect();
            let rt = runtime()?;
            let mut created = rt
                .block_on(topics::create(&cfg, &kafka.topics(), partitions))
                .map_err(anyhow::Error::msg)?;
            created.extend(
                rt.block_on(topics::create_named(&cfg, &side, partitions))
                    .map_err(anyhow::Error::msg)?,
            );
            for c in created {
                match c {
                    Created::New(t) => println!("created {t} ({partitions} partitions)"),
                    Created::Existed(t) => println!("exists  {t} (left as it is)"),
                }
            }
            Ok(())
        }
    }
}

fn progress_line(s: &Stats) -> String {
    serde_json::json!({
        "events": s.events.load(Ordering::Relaxed),
        "dead": s.dead.load(Ordering::Relaxed),
        "skipped": s.skipped.load(Ordering::Relaxed),
        "entries": s.entries.load(Ordering::Relaxed),
        "batches": s.batches.load(Ordering::Relaxed),
        "fenced": s.fenced.load(Ordering::Relaxed),
    })
    .to_string()
}

/// The store `--store URL` names, else the embedded one in `data/store` (layout checked).
fn store_at(data: &Path, url: Option<&str>) -> anyhow::Result<Arc<dyn Store>> {
    crate::rollback::StoreArgs {
        data: data.to_path_buf(),
        store: url.map(str::to_string),
    }
    .open()
}

/// `tidings consume`: the consumers alone, against `--brokers`.
pub fn consume(cmd: ConsumeCmd) -> anyhow::Result<()> {
    let kafka = cmd.kafka.required()?;
    // Stamped before it is read, so an edit in between is seen by the watcher.
    let path = cmd.ops.config.as_deref();
    let loaded = path.and_then(crate::chain::stamp);
    let cfg = cmd.ops.load_config()?;
    let token = cmd.ops.token(&cfg);
    let store = store_at(&cmd.data, cmd.store.as_deref())?;
    let control = Arc::new(Control::default());
    // The recorder first: the consume loop's metrics count from its first batch.
    let metrics = cmd.listen.map(|_| ops::install_metrics()).transpose()?;
    // The chain after the recorder, so its version gauge is exported.
    let chain = crate::chain::handle_of(&cfg)?;
    // Side-output topics must exist on the cluster (`tidings topics create --config F`).
    let reloader = Reloader::new(chain.clone(), None);
    let applier = cmd.consume.applier(store.clone(), control.clone(), chain)?;
    let topics = cmd.kafka.topics();
    let handle = kafka::spawn(
        cmd.consume
            .config(kafka.clone(), topics.clone(), control.clone()),
        applier,
    )?;
    let (maintain_stop, maintain) = cmd.consume.maintain(store.clone())?;
    let watch = watch_config(path, loaded, reloader.clone(), cmd.config_poll_ms)?;
    let stats = handle.stats();
    let stop = ctrl_c_flag()?;
    // The operations surface on its own runtime, beside the synchronous loop below.
    let _http = match (cmd.listen, metrics) {
        (Some(listen), Some(metrics)) => {
            let rt = runtime()?;
            let ops = Arc::new(Ops {
                role: Role::Consume,
                control,
                consumers: Some(handle.monitor()),
                store: Some(store.clone()),
                broker: Some(Arc::new(BrokerProbe::new(&kafka, &topics.activities)?)),
                ready_max_lag: cmd.consume.ready_max_lag,
            });
            ops::spawn_store_size(&rt, store.clone(), ops::STORE_SIZE_EVERY);
            let pipeline = crate::admin_pipeline::router(reloader);
            let app = ops::app(axum::Router::new(), ops, token, vec![pipeline], metrics);
            let listener = rt
                .block_on(tokio::net::TcpListener::bind(listen))
                .with_context(|| format!("cannot listen on {listen} (in use? try --listen)"))?;
            eprintln!(
                "tidings consume: /metrics, /health, /ready and /v1/admin on http://{listen}"
            );
            rt.spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the operations HTTP server stopped");
                }
            });
            Some(rt)
        }
        _ => None,
    };
    let mut last_change = Instant::now();
    let mut last_seen = (0, 0, 0);
    let tick = Duration::from_millis(cmd.progress_ms.unwrap_or(100).clamp(5, 10_000));
    while !stop.load(Ordering::SeqCst) && !handle.finished() {
        std::thread::sleep(tick);
        let now = (
            stats.events.load(Ordering::Relaxed),
            stats.dead.load(Ordering::Relaxed) + stats.skipped.load(Ordering::Relaxed),
            stats.batches.load(Ordering::Relaxed),
        );
        if now != last_seen {
            last_seen = now;
            last_change = Instant::now();
        }
        if cmd.progress_ms.is_some() {
            println!("{}", progress_line(&stats));
        }
        if let Some(idle) = cmd.exit_when_idle_ms {
            if last_change.elapsed() >= Duration::from_millis(idle) {
                break;
            }
        }
    }
    handle.stop()?;
    stop_watch(watch);
    maintain_stop.store(true, Ordering::SeqCst);
    let _ = maintain.join();
    println!("{}", progress_line(&stats));
    Ok(())
}

/// The config watcher thread and its stop flag.
type Watch = Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>;

/// Starts watching `path` (if any) for processor chain changes since `loaded`.
fn watch_config(
    path: Option<&Path>,
    loaded: crate::chain::Stamp,
    reloader: Reloader,
    poll_ms: u64,
) -> anyhow::Result<Watch> {
    let Some(path) = path else {
        return Ok(None);
    };
    let stop = Arc::new(AtomicBool::new(false));
    let t = reloader
        .watch(
            path.to_path_buf(),
            loaded,
            Duration::from_millis(poll_ms.max(10)),
            stop.clone(),
        )
        .context("starting the config watcher")?;
    Ok(Some((stop, t)))
}

fn stop_watch(w: Watch) {
    if let Some((stop, t)) = w {
        stop.store(true, Ordering::SeqCst);
        let _ = t.join();
    }
}

impl ConsumeCmd {
    /// Where WARN and ERROR logs are kept for `tidings errors`.
    pub fn errors_log(&self) -> PathBuf {
        ops::errlog::path_in(&self.data, self.ops.errors_log.as_deref())
    }
}

/// Ctrl-C (SIGINT) or SIGTERM, which container runtimes, systemd and Kubernetes send to stop
/// a process (as PID 1 in a container, an unhandled SIGTERM would be ignored until SIGKILL).
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub(crate) fn ctrl_c_flag() -> anyhow::Result<Arc<std::sync::atomic::AtomicBool>> {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = flag.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(stop_signal());
                f.store(true, Ordering::SeqCst);
            }
        })
        .context("starting the signal thread")?;
    Ok(flag)
}

/// `tidings up`: broker (unless --brokers), ingest gateway, consumers and query API.
pub fn up(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating the data directory {}", args.data.display()))?;
    // Stamped before it is read, so an edit in between is seen by the watcher.
    let path = args.ops.config.as_deref();
    let loaded = path.and_then(crate::chain::stamp);
    let cfg = args.ops.load_config()?;
    let token = args.ops.token(&cfg);
    let store = store_at(&args.data, args.store.as_deref())?;
    let _broker;
    let kafka = match &args.kafka.brokers {
        Some(b) => args.kafka.config(b.clone()),
        None => {
            let storage = if args.broker_in_memory {
                BrokerStorage::Memory
            } else {
                BrokerStorage::Sqlite(args.data.join("broker"))
            };
            let port = if args.broker_port == 0 {
                tidings_producers::broker::free_port()?
            } else {
                args.broker_port
            };
            let b = LocalBroker::start_on(storage, &args.data, port)?;
            let k = args.kafka.config(b.bootstrap());
            eprintln!("local broker (tansu) on {}", b.bootstrap());
            _broker = b;
            k
        }
    };
    let topics = args.kafka.topics();
    let rt = runtime()?;
    for c in rt
        .block_on(topics::create(&kafka, &topics, args.partitions))
        .map_err(anyhow::Error::msg)?
    {
        if let Created::New(t) = c {
            eprintln!("created topic {t} ({} partitions)", args.partitions);
        }
    }
    let metrics = ops::install_metrics()?;
    let control = Arc::new(Control::default());
    // The chain after the recorder, so its version gauge is exported.
    let chain = crate::chain::handle_of(&cfg)?;
    let ensure: EnsureTopics = {
        let (kafka, partitions) = (kafka.clone(), args.partitions);
        Arc::new(move |names: &[String]| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            futures::executor::block_on(topics::create_named(&kafka, &names, partitions)).map(
                |created| {
                    for c in created {
                        if let Created::New(t) = c {
                            eprintln!("created side-output topic {t} ({partitions} partitions)");
                        }
                    }
                },
            )
        })
    };
    ensure(&chain.current().0.topics()).map_err(anyhow::Error::msg)?;
    let reloader = Reloader::new(chain.clone(), Some(ensure));
    let applier = args
        .consume
        .applier(store.clone(), control.clone(), chain)?;
    let mut ccfg = args
        .consume
        .config(kafka.clone(), topics.clone(), control.clone());
    ccfg.reread_from_start |= args.kafka.brokers.is_none();
    let consumer = kafka::spawn(ccfg, applier)?;
    let (maintain_stop, maintain) = args.consume.maintain(store.clone())?;
    let backup_stop = Arc::new(AtomicBool::new(false));
    let backups = args.backups.spawn(
        store.clone(),
        tidings_consumers::backup::LogSource {
            kafka: kafka.clone(),
            topics: topics.clone(),
            reread: args.kafka.brokers.is_none(),
        },
        args.consume.group.clone(),
        backup_stop.clone(),
    )?;
    let digests = args.webhook.spawn(
        webhook::Sources {
            kafka: kafka.clone(),
            dlq: topics.dlq.clone(),
            reread: args.kafka.brokers.is_none(),
            errors_log: args.errors_log(),
        },
        backup_stop.clone(),
    )?;
    let mut pcfg = ProducerConfig::new(kafka.brokers.clone());
    pcfg.kafka = kafka.clone();
    pcfg.topics = topics.clone();
    let producer = Producer::new(pcfg)?;
    let qopts = args
        .query
        .options(&cfg, args.consume.projector.backfill, control.clone())?;
    let closing = qopts.closing.clone();
    let ops = Arc::new(Ops {
        role: Role::Up,
        control,
        consumers: Some(consumer.monitor()),
        store: Some(store.clone()),
        broker: Some(Arc::new(BrokerProbe::new(&kafka, &topics.activities)?)),
        ready_max_lag: args.consume.ready_max_lag,
    });
    ops::spawn_store_size(&rt, store.clone(), ops::STORE_SIZE_EVERY);
    let watch = watch_config(path, loaded, reloader.clone(), args.config_poll_ms)?;
    let app = tidings_producers::gateway::router(producer)
        .merge(tidings_query::http::router(store.clone(), qopts));
    let pipeline = crate::admin_pipeline::router(reloader);
    serve_until_ctrl_c(
        &rt,
        args.listen,
        ops::app(app, ops, token, vec![pipeline], metrics),
        closing,
        format!(
            "tidings is up: http://{} (POST /v1/activities, GET /v1/feeds/{{user}}/home, /metrics, /health, /ready, /v1/admin); Ctrl-C stops",
            args.listen
        ),
        "stopping: draining the batch in flight",
    )?;
    let stats = consumer.stats();
    consumer.stop()?;
    stop_watch(watch);
    maintain_stop.store(true, Ordering::SeqCst);
    let _ = maintain.join();
    backup_stop.store(true, Ordering::SeqCst);
    if let Some(b) = backups {
        // A backup in progress finishes first (its directory would be left incomplete).
        let _ = b.join();
    }
    if let Some(d) = digests {
        let _ = d.join();
    }
    eprintln!("stopped cleanly; {}", progress_line(&stats));
    Ok(())
}

impl UpArgs {
    /// Where WARN and ERROR logs are kept for `tidings errors` and the digest webhook.
    pub fn errors_log(&self) -> PathBuf {
        ops::errlog::path_in(&self.data, self.ops.errors_log.as_deref())
    }
}

/// Flags of `tidings serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The store: `rocksdb:PATH[?…]` or `fdb:[CLUSTER_FILE]` (needs the `fdb` build feature).
    #[arg(long, env = "TIDINGS_STORE")]
    store: String,
    /// HTTP address of the query API, /metrics, /health, /ready and the admin API.
    #[arg(long, env = "TIDINGS_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// The consumers' `--backfill`, so pulled authors page like pushed ones.
    #[arg(long, env = "TIDINGS_BACKFILL", default_value_t = 100)]
    backfill: usize,
    #[command(flatten)]
    query: QueryArgs,
    #[command(flatten)]
    pub(crate) ops: OpsArgs,
}

/// `tidings serve`: the query service alone.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.ops.load_config()?;
    let token = args.ops.token(&cfg);
    let store = tidings_store::open(&args.store)
        .with_context(|| format!("opening the store {}", args.store))?;
    let metrics = ops::install_metrics()?;
    let control = Arc::new(Control::default());
    let qopts = args.query.options(&cfg, args.backfill, control.clone())?;
    let closing = qopts.closing.clone();
    let ops = Arc::new(Ops {
        role: Role::Serve,
        control,
        consumers: None,
        store: Some(store.clone()),
        broker: None,
        ready_max_lag: 0,
    });
    let rt = runtime()?;
    ops::spawn_store_size(&rt, store.clone(), ops::STORE_SIZE_EVERY);
    serve_until_ctrl_c(
        &rt,
        args.listen,
        ops::app(
            tidings_query::http::router(store, qopts),
            ops,
            token,
            Vec::new(),
            metrics,
        ),
        closing,
        format!(
            "tidings query service on http://{}; Ctrl-C stops",
            args.listen
        ),
        "stopping",
    )
}

/// Flags of `tidings ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// HTTP address of the ingest gateway, /metrics, /health, /ready and the admin API.
    #[arg(long, env = "TIDINGS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    pub(crate) ops: OpsArgs,
}

/// `tidings ingest`: the HTTP ingest gateway alone, against `--brokers`.
pub fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let kafka = args.kafka.required()?;
    let cfg = args.ops.load_config()?;
    let token = args.ops.token(&cfg);
    let topics = args.kafka.topics();
    let metrics = ops::install_metrics()?;
    let mut pcfg = ProducerConfig::new(kafka.brokers.clone());
    pcfg.kafka = kafka.clone();
    pcfg.topics = topics.clone();
    let producer = Producer::new(pcfg)?;
    let ops = Arc::new(Ops {
        role: Role::Ingest,
        control: Arc::default(),
        consumers: None,
        store: None,
        broker: Some(Arc::new(BrokerProbe::new(&kafka, &topics.activities)?)),
        ready_max_lag: 0,
    });
    serve_until_ctrl_c(
        &runtime()?,
        args.listen,
        ops::app(
            tidings_producers::gateway::router(producer),
            ops,
            token,
            Vec::new(),
            metrics,
        ),
        Arc::new(AtomicBool::new(false)),
        format!(
            "tidings ingest gateway on http://{} → {}; Ctrl-C stops",
            args.listen, kafka.brokers
        ),
        "stopping",
    )
}

/// Serves `app` on `listen` until Ctrl-C, which sets `closing` (open event streams end) and
/// prints `stopping`.
fn serve_until_ctrl_c(
    rt: &tokio::runtime::Runtime,
    listen: SocketAddr,
    app: axum::Router,
    closing: Arc<AtomicBool>,
    banner: String,
    stopping: &'static str,
) -> anyhow::Result<()> {
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (in use? try --listen)"))?;
        eprintln!("{banner}");
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                stop_signal().await;
                closing.store(true, Ordering::SeqCst);
                eprintln!("{stopping}");
            })
            .await
            .context("HTTP server")
    })
}
