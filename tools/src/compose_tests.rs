//! `docker-compose.yml`, `deploy/prometheus.yml` and the `Dockerfile` against the real CLI.
//!
//! No container engine runs here, so the compose file is validated structurally: the services
//! and their images, ports, volumes and dependencies; that Prometheus scrapes exactly the
//! tidings services' `--listen` ports; and that every tidings service's `command` — with every
//! `TIDINGS_*` variable it sets turned into the flag that declares it — is accepted by the
//! very parser the binary uses (`Cli::try_parse_from`).

use std::collections::{BTreeMap, BTreeSet};

use clap::{CommandFactory, Parser};
use serde_json::Value;

use crate::Cli;

const COMPOSE: &str = include_str!("../../docker-compose.yml");
const PROMETHEUS: &str = include_str!("../../deploy/prometheus.yml");
const DOCKERFILE: &str = include_str!("../../Dockerfile");
const TOOLS_MANIFEST: &str = include_str!("../Cargo.toml");

/// YAML (with `<<` merge keys applied) as JSON values.
fn yaml(text: &str) -> Value {
    let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).expect("valid YAML");
    v.apply_merge().expect("merge keys resolve");
    serde_json::to_value(v).expect("string keys")
}

fn services() -> BTreeMap<String, Value> {
    let doc = yaml(COMPOSE);
    doc["services"]
        .as_object()
        .expect("a services map")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// Services built from this repository (the tidings image).
fn tidings_services() -> BTreeMap<String, Value> {
    services()
        .into_iter()
        .filter(|(_, s)| s["image"] == "tidings:latest")
        .collect()
}

/// The value after `flag` in a command.
fn flag<'a>(cmd: &'a [String], flag: &str) -> Option<&'a str> {
    cmd.iter()
        .position(|a| a == flag)
        .and_then(|i| cmd.get(i + 1))
        .map(String::as_str)
}

/// `NAME:TARGET[:ro]` volume mounts of a service: (name or path, target).
fn mounts(s: &Value) -> Vec<(String, String)> {
    strings(&s["volumes"])
        .iter()
        .map(|m| {
            let mut parts = m.split(':');
            let src = parts.next().unwrap_or_default().to_owned();
            let dst = parts.next().expect("NAME:TARGET").to_owned();
            (src, dst)
        })
        .collect()
}

/// The argv a service runs, with each `TIDINGS_*` variable of its environment appended as the
/// flag that declares it. Panics naming a variable no flag of that subcommand declares.
fn argv(name: &str, s: &Value) -> Vec<String> {
    let cmd = strings(&s["command"]);
    let sub = cmd.first().expect("a subcommand").clone();
    let mut root = Cli::command();
    root.build();
    let subcommand = root
        .find_subcommand(&sub)
        .unwrap_or_else(|| panic!("{name}: `tidings {sub}` is not a subcommand"))
        .clone();
    let mut args = vec!["tidings".to_owned()];
    args.extend(cmd);
    let env = s["environment"].as_object().cloned().unwrap_or_default();
    for (var, value) in env {
        if !var.starts_with("TIDINGS_") {
            continue;
        }
        let arg = subcommand
            .get_arguments()
            .chain(root.get_arguments())
            .find(|a| a.get_env().is_some_and(|e| e == var.as_str()))
            .unwrap_or_else(|| {
                panic!("{name}: {var} is set, but `tidings {sub}` declares no flag reading it")
            });
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        // `${VAR:-}` is filled in by compose; stand in a value of the right shape.
        let value = if value.starts_with("${") {
            "a-token-from-the-environment".to_owned()
        } else {
            value
        };
        let long = arg.get_long().expect("env flags have a long name");
        if arg.get_action().takes_values() {
            args.push(format!("--{long}={value}"));
        } else if value == "true" {
            args.push(format!("--{long}"));
        }
    }
    args
}

#[test]
fn the_services_are_all_there() {
    let s = services();
    let names: BTreeSet<&str> = s.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "kafka",
            "topics",
            "fdb",
            "fdb-init",
            "ingest",
            "consumer-0",
            "consumer-1",
            "query",
            "prometheus"
        ])
    );
    let kafka = &s["kafka"];
    assert!(kafka["image"]
        .as_str()
        .unwrap()
        .starts_with("apache/kafka:"));
    let roles = kafka["environment"]["KAFKA_PROCESS_ROLES"]
        .as_str()
        .unwrap();
    assert_eq!(roles, "broker,controller", "KRaft, one node for both roles");
    assert_eq!(
        kafka["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"],
        "1@kafka:9093"
    );
    assert_eq!(
        kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"],
        "PLAINTEXT://kafka:9092"
    );
    assert!(s["fdb"]["image"]
        .as_str()
        .unwrap()
        .starts_with("foundationdb/foundationdb:"));
    assert!(s["fdb-init"]["image"] == s["fdb"]["image"]);
    let init = strings(&s["fdb-init"]["command"]).join(" ");
    assert!(
        init.contains(r#"--exec "configure new single ssd""#),
        "{init}"
    );
    assert!(s["prometheus"]["image"]
        .as_str()
        .unwrap()
        .starts_with("prom/prometheus:"));
    for (name, svc) in tidings_services() {
        assert_eq!(svc["build"]["dockerfile"], "Dockerfile", "{name}");
    }
}

#[test]
fn every_tidings_command_and_variable_is_accepted_by_the_cli() {
    let svcs = tidings_services();
    assert_eq!(svcs.len(), 5, "topics, ingest, two consumers, query");
    for (name, s) in &svcs {
        let args = argv(name, s);
        if let Err(e) = Cli::try_parse_from(&args) {
            panic!("{name}: {args:?} is refused:\n{e}");
        }
    }
    let roles: BTreeMap<&str, String> = svcs
        .iter()
        .map(|(n, s)| (n.as_str(), strings(&s["command"])[0].clone()))
        .collect();
    assert_eq!(roles["topics"], "topics");
    assert_eq!(roles["ingest"], "ingest");
    assert_eq!(roles["consumer-0"], "consume");
    assert_eq!(roles["consumer-1"], "consume");
    assert_eq!(roles["query"], "serve");
}

#[test]
fn consumers_split_the_partitions_and_share_the_foundationdb_cluster() {
    let s = services();
    let fdb_config = mounts(&s["fdb"])
        .into_iter()
        .find(|(src, _)| src == "fdb-config")
        .expect("fdb shares its cluster file through the fdb-config volume")
        .1;
    let mut instances = BTreeSet::new();
    for name in ["consumer-0", "consumer-1", "query"] {
        let cmd = strings(&s[name]["command"]);
        let url = flag(&cmd, "--store").unwrap_or_else(|| panic!("{name} has --store"));
        let cluster_file = url.strip_prefix("fdb:").expect("an fdb: store");
        let dir = std::path::Path::new(cluster_file).parent().unwrap();
        assert!(
            mounts(&s[name])
                .iter()
                .any(|(src, dst)| src == "fdb-config" && std::path::Path::new(dst) == dir),
            "{name}: the cluster file's directory {dir:?} is the fdb-config volume"
        );
        assert_eq!(std::path::Path::new(&fdb_config), dir);
        if name != "query" {
            instances.insert(flag(&cmd, "--instance").unwrap().to_owned());
            let deps = &s[name]["depends_on"];
            for d in ["topics", "fdb-init"] {
                assert_eq!(
                    deps[d]["condition"], "service_completed_successfully",
                    "{name} waits for {d}"
                );
            }
        }
    }
    assert_eq!(instances, BTreeSet::from(["0/2".into(), "1/2".into()]));
    assert_eq!(
        s["topics"]["depends_on"]["kafka"]["condition"],
        "service_healthy"
    );
}

#[test]
fn prometheus_scrapes_every_role_on_its_listen_port() {
    let s = services();
    let mut expected = BTreeSet::new();
    for (name, svc) in tidings_services() {
        let cmd = strings(&svc["command"]);
        if let Some(listen) = flag(&cmd, "--listen") {
            let port = listen.rsplit(':').next().unwrap();
            assert!(
                listen.starts_with("0.0.0.0:"),
                "{name} listens on every interface"
            );
            expected.insert(format!("{name}:{port}"));
        }
    }
    assert_eq!(
        expected.len(),
        4,
        "ingest, two consumers, query: {expected:?}"
    );
    let prom = yaml(PROMETHEUS);
    let targets: BTreeSet<String> = prom["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|job| job["static_configs"].as_array().unwrap().clone())
        .flat_map(|c| strings(&c["targets"]))
        .collect();
    assert_eq!(targets, expected);
    assert!(mounts(&s["prometheus"])
        .iter()
        .any(|(src, dst)| src == "./deploy/prometheus.yml"
            && dst == "/etc/prometheus/prometheus.yml"));
    // The public ports are the listen ports of ingest and query.
    for (name, port) in [("ingest", "8080"), ("query", "8081")] {
        assert_eq!(strings(&s[name]["ports"]), vec![format!("{port}:{port}")]);
        assert!(expected.contains(&format!("{name}:{port}")));
    }
}

#[test]
fn every_volume_used_is_declared() {
    let doc = yaml(COMPOSE);
    let declared: BTreeSet<&String> = doc["volumes"].as_object().unwrap().keys().collect();
    for (name, s) in services() {
        for (src, _) in mounts(&s) {
            if !src.starts_with('.') && !src.starts_with('/') {
                assert!(
                    declared.contains(&src),
                    "{name} mounts undeclared volume {src}"
                );
            }
        }
    }
}

#[test]
fn the_image_is_built_with_foundationdb() {
    assert!(DOCKERFILE.contains("--features fdb"), "{DOCKERFILE}");
    assert!(DOCKERFILE.contains("libclang-dev"));
    assert!(DOCKERFILE.contains("foundationdb-clients"));
    assert!(DOCKERFILE.contains(r#"ENTRYPOINT ["tidings"]"#));
    let manifest: toml::Value = toml::from_str(TOOLS_MANIFEST).unwrap();
    assert_eq!(
        manifest["features"]["fdb"].as_array().unwrap()[0].as_str(),
        Some("tidings-store/fdb")
    );
}
