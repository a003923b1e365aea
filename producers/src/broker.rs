//! The local Kafka-API broker: tansu, started on 127.0.0.1 and a free port.
//!
//! On one machine tidings runs tansu (installed by `scripts/setup.sh`). [`LocalBroker`] starts
//! it as a child process, waits until it answers a metadata request, and stops it when dropped.
//! Storage is `sqlite://DIR/broker.db` (durable across restarts) or `memory://tansu/` (tests).
//! Against a real Kafka cluster none of this runs: pass `--brokers host:port`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::topics::KafkaConfig;

/// The broker version the project installs and tests against.
pub const TANSU_VERSION: &str = "0.6.0";

/// Where the broker keeps its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerStorage {
    /// In memory: fast, gone when the broker stops.
    Memory,
    /// A SQLite file in this directory: survives restarts.
    Sqlite(PathBuf),
}

impl BrokerStorage {
    /// The storage URL and the directory tansu runs in: tansu 0.6 resolves a `sqlite://`
    /// path relative to its working directory, so it runs inside the storage directory.
    fn url_and_dir(&self, log_dir: &Path) -> (String, PathBuf) {
        match self {
            BrokerStorage::Memory => ("memory://tansu/".into(), log_dir.to_path_buf()),
            BrokerStorage::Sqlite(dir) => ("sqlite://broker.db".into(), dir.clone()),
        }
    }
}

/// Why the broker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The executable is missing.
    #[error(
        "the local broker `{program}` was not found ({source}); run scripts/setup.sh to install tansu {TANSU_VERSION}, or point tidings at a running Kafka with --brokers host:port"
    )]
    NotInstalled {
        /// What was run.
        program: String,
        /// The spawn error.
        source: std::io::Error,
    },
    /// It exited right after starting.
    #[error("the local broker exited at start ({status}); its log {log} says why")]
    Exited {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Where its output went.
        log: String,
    },
    /// It started but did not answer.
    #[error("the local broker did not answer on {addr} within {waited:?}; its log is {log}")]
    NoAnswer {
        /// Its address.
        addr: SocketAddr,
        /// How long we waited.
        waited: Duration,
        /// Where its output went.
        log: String,
    },
    /// Anything else (ports, files).
    #[error("cannot start the local broker: {0}")]
    Io(#[from] std::io::Error),
}

/// A running tansu child process; killed on drop.
#[derive(Debug)]
pub struct LocalBroker {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The tansu executable: `$TIDINGS_TANSU`, else `tansu` on the PATH, else `~/.cargo/bin/tansu`.
pub fn tansu_program() -> PathBuf {
    if let Some(p) = std::env::var_os("TIDINGS_TANSU") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("tansu").is_file()));
    if on_path {
        return PathBuf::from("tansu");
    }
    std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".cargo/bin/tansu"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("tansu"))
}

impl LocalBroker {
    /// Starts tansu on 127.0.0.1 and a free port; its output goes to `log_dir/broker.log`.
    pub fn start(storage: BrokerStorage, log_dir: &Path) -> Result<Self, BrokerError> {
        Self::start_on(storage, log_dir, free_port()?)
    }

    /// [`LocalBroker::start`] on a given port (a restarted broker keeps its address).
    pub fn start_on(
        storage: BrokerStorage,
        log_dir: &Path,
        port: u16,
    ) -> Result<Self, BrokerError> {
        if let BrokerStorage::Sqlite(dir) = &storage {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::create_dir_all(log_dir)?;
        let log = log_dir.join("broker.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let url = format!("tcp://{addr}");
        let program = tansu_program();
        let (storage_url, cwd) = storage.url_and_dir(log_dir);
        let child = Command::new(&program)
            .current_dir(&cwd)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", &storage_url])
            .args(["--cluster-id", "tidings"])
            .env_remove("SCHEMA_REGISTRY")
            .env(
                "RUST_LOG",
                std::env::var("TIDINGS_BROKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|source| BrokerError::NotInstalled {
                program: program.display().to_string(),
                source,
            })?;
        let mut broker = LocalBroker { child, addr, log };
        broker.wait_ready(Duration::from_secs(30))?;
        Ok(broker)
    }

    /// `127.0.0.1:port`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Client settings for this broker.
    pub fn kafka(&self) -> KafkaConfig {
        KafkaConfig::new(self.bootstrap())
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), BrokerError> {
        let start = Instant::now();
        let no_answer = |b: &LocalBroker| BrokerError::NoAnswer {
            addr: b.addr,
            waited: start.elapsed(),
            log: b.log.display().to_string(),
        };
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                return Err(BrokerError::Exited {
                    status,
                    log: self.log.display().to_string(),
                });
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                let c: Option<BaseConsumer> = self.kafka().client().create().ok();
                if c.is_some_and(|c| c.fetch_metadata(None, Duration::from_secs(2)).is_ok()) {
                    tracing::info!(addr = %self.addr, "local broker (tansu) is up");
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(no_answer(self))
    }

    /// Stops the broker (SIGKILL: tests use it to simulate a broker crash too).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalBroker {
    fn drop(&mut self) {
        self.kill();
    }
}
