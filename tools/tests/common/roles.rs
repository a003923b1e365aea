//! Running `tidings` roles as processes and talking to them over HTTP, for the operations
//! tests: `/ready`, `/metrics`, `/v1/admin/...`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `tidings` process with an HTTP address; SIGKILLed when dropped.
pub struct Role {
    child: Option<super::KillOnDrop>,
    log: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Role {
    /// Starts `tidings ARGS --listen 127.0.0.1:PORT` (a free port) with `env`; its stderr goes
    /// to `dir/NAME.log`.
    pub fn start(name: &str, args: &[&str], env: &[(&str, &str)], dir: &Path) -> Role {
        let port = tidings_producers::broker::free_port().unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidings"));
        cmd.args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_remove("TIDINGS_ADMIN_TOKEN")
            .env("TIDINGS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Role {
            child: Some(super::KillOnDrop(cmd.spawn().unwrap())),
            log,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with its log if it exited.
    pub fn alive(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("tidings exited with {status}; log:\n{}", self.log());
        }
    }

    /// Waits (up to 90 s) until `/ready` answers 200; panics with the log if it exits first.
    pub fn wait_ready(&mut self, http: &Http) {
        super::wait_until(Duration::from_secs(90), "/ready answers 200", || {
            self.alive();
            http.send(
                reqwest::Method::GET,
                &format!("{}/ready", self.base),
                None,
                None,
            )
            .is_some_and(|a| a.status == 200)
        });
    }

    /// Its `/metrics` text.
    pub fn metrics(&self, http: &Http) -> String {
        http.get(&format!("{}/metrics", self.base), None).text
    }

    /// Ctrl-C, then waits for a clean exit; returns the log.
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "tidings did not stop on Ctrl-C; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self.log();
        assert!(status.success(), "exit status {status}; log:\n{log}");
        log
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    /// The body as JSON (`null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// An HTTP client for the tests, with a runtime of its own.
pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            rt: super::rt(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }
}

impl Http {
    /// Sends a request; `token` adds `Authorization: Bearer`. `None` if no answer came.
    pub fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Option<Answer> {
        self.rt.block_on(async {
            let mut r = self.client.request(method, url);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            if let Some(b) = body {
                r = r.json(&b);
            }
            let resp = r.send().await.ok()?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let text = resp.text().await.ok()?;
            Some(Answer {
                status,
                headers,
                text,
            })
        })
    }

    /// GET, which must be answered.
    pub fn get(&self, url: &str, token: Option<&str>) -> Answer {
        self.send(reqwest::Method::GET, url, token, None)
            .unwrap_or_else(|| panic!("no answer from GET {url}"))
    }

    /// POST, which must be answered.
    pub fn post(&self, url: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        self.send(reqwest::Method::POST, url, token, body)
            .unwrap_or_else(|| panic!("no answer from POST {url}"))
    }

    /// Only the status and headers of a GET (for streams that never end).
    pub fn head_of(&self, url: &str) -> (u16, reqwest::header::HeaderMap) {
        self.rt.block_on(async {
            let resp = self.client.get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.headers().clone())
        })
    }

    /// Runs a future on the client's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Spawns a task on the client's runtime.
    pub fn spawn<F>(&self, f: F)
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.spawn(f);
    }
}

/// The value of one Prometheus sample line `name{labels} value` (labels as rendered, in order;
/// `""` for none).
pub fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let head = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&head))
        .and_then(|v| v.trim().parse().ok())
}

/// The `checks` of a `/ready` answer by name: (ok, detail, fix).
pub fn checks(ready: &Value) -> std::collections::BTreeMap<String, (bool, String, String)> {
    ready["checks"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                (
                    c["ok"].as_bool().unwrap_or(false),
                    c["detail"].as_str().unwrap_or_default().to_owned(),
                    c["fix"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}
