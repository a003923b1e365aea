//! Interop with Python fastavro (`tests/interop.py`), both ways: Python writes single-object
//! records that Rust decodes, and Rust writes records that Python decodes (with its own
//! fingerprint lookup and v1 → v2 resolution).
//!
//! Needs `python3` with `fastavro` (`scripts/setup.sh` installs it). Without it these tests
//! FAIL, on purpose: a skipped interop test would let the fingerprint drift unnoticed.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value as Json};
use tidings_core::{Activity, Event, GraphChange, GraphOp, Producer, Retraction, Update};
use tidings_schemas::{decode, encode, encode_with_version, registry, RecordKind};

const SETUP: &str = "run scripts/setup.sh (pip install fastavro)";

fn script() -> String {
    format!("{}/tests/interop.py", manifest_dir())
}

/// This crate's directory as cargo gives it to the running test: test binaries may come from a
/// build cache shared with another checkout, where the compile-time path names that checkout.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

/// Runs the script in `mode`, feeding `input`; panics with the fix if Python or fastavro is
/// missing.
fn python(mode: &str, input: &str) -> Vec<Json> {
    let probe = Command::new("python3")
        .args(["-c", "import fastavro"])
        .output();
    match probe {
        Err(e) => panic!("cannot run python3 ({e}): {SETUP}"),
        Ok(o) if !o.status.success() => panic!(
            "python3 cannot import fastavro: {SETUP}\n{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Ok(_) => {}
    }
    let mut child = Command::new("python3")
        .args([&script(), &manifest_dir(), mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "interop.py {mode} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn attrs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What each case written by interop.py must decode to (kept in step with the script).
fn python_cases() -> BTreeMap<&'static str, Event> {
    let py = Producer::new("py-svc", "3.12");
    BTreeMap::from([
        (
            "activity_v2",
            Event::Activity(Activity {
                id: common::id("0192f3c4-5b6a-7c8d-9e0f-112233445566"),
                actor: 7,
                verb: "comment".into(),
                object: "comment:991".into(),
                target: Some("post:12".into()),
                time_ms: 1_700_000_000_123,
                to: vec![1, 300, 70_000],
                text: "from python, ünïcödé 🐍".into(),
                attributes: attrs(&[("lang", "en"), ("client", "py")]),
                producer: py.clone(),
            }),
        ),
        (
            "activity_v1",
            Event::Activity(Activity {
                id: common::id("0192f3c4-5b6a-7c8d-9e0f-000000000009"),
                actor: 8,
                verb: "post".into(),
                object: "post:1".into(),
                target: None,
                time_ms: 1_700_000_000_000,
                to: vec![],
                text: String::new(),
                attributes: BTreeMap::new(),
                producer: Producer::new("py-old", "0.9"),
            }),
        ),
        (
            "retraction",
            Event::Retraction(Retraction {
                id: common::id("0192f3c4-5b6a-7c8d-9e0f-000000000001"),
                activity_id: common::id("0192f3c4-5b6a-7c8d-9e0f-112233445566"),
                actor: 7,
                time_ms: 1_700_000_000_999,
                producer: py.clone(),
            }),
        ),
        (
            "update",
            Event::Update(Update {
                id: common::id("0192f3c4-5b6a-7c8d-9e0f-000000000002"),
                activity_id: common::id("0192f3c4-5b6a-7c8d-9e0f-112233445566"),
                actor: 7,
                time_ms: 1_700_000_001_000,
                text: Some("edited".into()),
                attributes: attrs(&[("lang", "fr")]),
                producer: py,
            }),
        ),
        (
            "graph_change",
            Event::Graph(GraphChange {
                id: common::id("01890a5d-ac96-774b-bcce-b302099a8057"),
                actor: 42,
                subject: 7,
                op: GraphOp::Mute,
                time_ms: 1_700_000_000_000,
                producer: Producer::new("graph-py", "1"),
            }),
        ),
    ])
}

#[test]
fn python_writes_rust_reads() {
    let expected = python_cases();
    let lines = python("write", "");
    assert_eq!(lines.len(), expected.len());
    for line in lines {
        let case = line["case"].as_str().unwrap();
        let bytes = unhex(line["hex"].as_str().unwrap());
        assert_eq!(decode(&bytes).as_ref(), Ok(&expected[case]), "case {case}");
        // Byte-for-byte what Rust writes, except for the two-attribute activity: Python writes
        // map entries in insertion order, Rust in key order (both are valid Avro).
        let e = &expected[case];
        let ours = match case {
            "activity_v1" => encode_with_version(e, 1).unwrap(),
            _ => encode(e),
        };
        assert_eq!(ours[..10], bytes[..10], "case {case}: header");
        if case != "activity_v2" {
            assert_eq!(ours, bytes, "case {case}: bytes");
        }
    }
}

/// The record as fastavro prints it, for a domain event (uuid as text, op as its symbol).
fn as_avro_json(e: &Event) -> Json {
    let mut j = match e {
        Event::Activity(a) => serde_json::to_value(a),
        Event::Retraction(r) => serde_json::to_value(r),
        Event::Update(u) => serde_json::to_value(u),
        Event::Graph(g) => serde_json::to_value(g),
    }
    .unwrap();
    if let Event::Graph(g) = e {
        j["op"] = json!(g.op.as_str().to_ascii_uppercase());
    }
    j
}

#[test]
fn rust_writes_python_reads() {
    let mut input = String::new();
    let mut expected = BTreeMap::new();
    for (i, e) in common::all_samples().iter().enumerate() {
        for sv in registry().versions_of(RecordKind::of(e)) {
            let case = format!("{i}:{}", sv.file());
            let bytes = encode_with_version(e, sv.version()).unwrap();
            input += &format!("{}\n", json!({"case": case, "hex": hex(&bytes)}));
            expected.insert(
                case,
                (sv.file(), as_avro_json(&common::project(e, sv.version()))),
            );
        }
    }
    let lines = python("read", &input);
    assert_eq!(lines.len(), expected.len());
    for line in lines {
        let case = line["case"].as_str().unwrap();
        let (file, record) = &expected[case];
        assert_eq!(
            line["file"],
            json!(file),
            "case {case}: Python found another writer schema"
        );
        assert_eq!(&line["record"], record, "case {case}");
    }
}
