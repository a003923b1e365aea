//! Shared by the integration tests: sample events, proptest strategies, and the projection of
//! an event onto an older schema version.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use apache_avro::Schema;
use proptest::prelude::*;
use tidings_core::{Activity, Event, EventId, GraphChange, GraphOp, Producer, Retraction, Update};
use tidings_schemas::{registry, RecordKind};

pub fn id(s: &str) -> EventId {
    s.parse().unwrap()
}

/// A few hand-picked events of `kind`: one with every optional field set, one minimal.
pub fn samples(kind: RecordKind) -> Vec<Event> {
    let full_attrs = BTreeMap::from([
        ("lang".to_string(), "en".to_string()),
        ("client".to_string(), "ios/17.2 ✓".to_string()),
    ]);
    let p = Producer::new("posts-api", "1.4.2");
    match kind {
        RecordKind::Activity => vec![
            Event::Activity(Activity {
                id: id("0192f3c4-5b6a-7c8d-9e0f-112233445566"),
                actor: 7,
                verb: "comment".into(),
                object: "comment:991".into(),
                target: Some("post:12".into()),
                time_ms: 1_700_000_000_123,
                to: vec![1, 300, 70_000],
                text: "nice one, ünïcödé 🎉".into(),
                attributes: full_attrs,
                producer: p.clone(),
            }),
            Event::Activity(Activity {
                id: EventId::MIN,
                actor: 0,
                verb: "post".into(),
                object: "post:1".into(),
                target: None,
                time_ms: 1,
                to: vec![],
                text: String::new(),
                attributes: BTreeMap::new(),
                producer: Producer::new("x", ""),
            }),
        ],
        RecordKind::Retraction => vec![Event::Retraction(Retraction {
            id: id("0192f3c4-5b6a-7c8d-9e0f-000000000001"),
            activity_id: id("0192f3c4-5b6a-7c8d-9e0f-112233445566"),
            actor: 7,
            time_ms: 1_700_000_000_999,
            producer: p,
        })],
        RecordKind::Update => vec![
            Event::Update(Update {
                id: id("0192f3c4-5b6a-7c8d-9e0f-000000000002"),
                activity_id: id("0192f3c4-5b6a-7c8d-9e0f-112233445566"),
                actor: 7,
                time_ms: 1_700_000_001_000,
                text: Some("edited".into()),
                attributes: full_attrs,
                producer: p.clone(),
            }),
            Event::Update(Update {
                id: EventId::MAX,
                activity_id: EventId::MIN,
                actor: 7,
                time_ms: 1,
                text: None,
                attributes: BTreeMap::new(),
                producer: p,
            }),
        ],
        RecordKind::GraphChange => GraphOp::ALL
            .into_iter()
            .enumerate()
            .map(|(i, op)| {
                Event::Graph(GraphChange {
                    id: EventId::from_bytes([i as u8; 16]),
                    actor: 42,
                    subject: i64::MAX - i as i64,
                    op,
                    time_ms: 1_700_000_000_000 + i as i64,
                    producer: Producer::new("graph-api", "2.0.0"),
                })
            })
            .collect(),
    }
}

/// Every sample of every kind.
pub fn all_samples() -> Vec<Event> {
    RecordKind::ALL.into_iter().flat_map(samples).collect()
}

fn field_names(schema: &Schema) -> Vec<&str> {
    match schema {
        Schema::Record(r) => r.fields.iter().map(|f| f.name.as_str()).collect(),
        _ => panic!("not a record"),
    }
}

/// What `event` reads back as after a round trip through `version` of its schema: every field
/// of the latest schema that `version` lacks takes the reader's default.
pub fn project(event: &Event, version: u32) -> Event {
    let kind = RecordKind::of(event);
    let reg = registry();
    let writer = field_names(reg.get(kind, version).unwrap().schema());
    let mut e = event.clone();
    for name in field_names(reg.latest(kind).schema()) {
        if !writer.contains(&name) {
            clear_field(&mut e, name);
        }
    }
    e
}

/// Sets `name` to the default the schemas give it.
fn clear_field(e: &mut Event, name: &str) {
    match (e, name) {
        (Event::Activity(a), "attributes") => a.attributes.clear(),
        (Event::Activity(a), "target") => a.target = None,
        (Event::Update(u), "attributes") => u.attributes.clear(),
        (Event::Update(u), "text") => u.text = None,
        (e, name) => panic!(
            "tests/common/mod.rs does not know the default of `{name}` in {:?}: add it to clear_field",
            RecordKind::of(e)
        ),
    }
}

// ---- proptest strategies: any domain value, with valid-ish strings ----

fn event_id() -> impl Strategy<Value = EventId> {
    any::<[u8; 16]>().prop_map(EventId::from_bytes)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", "\\PC{0,200}", Just(String::new())]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn attributes() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map("[a-z_]{1,12}", text(), 0..6)
}

fn producer() -> impl Strategy<Value = Producer> {
    ("[a-z][a-z0-9-]{0,20}", "[0-9.]{0,10}").prop_map(|(n, v)| Producer::new(n, v))
}

fn user() -> impl Strategy<Value = i64> {
    prop_oneof![0..1_000_000i64, any::<i64>()]
}

fn time() -> impl Strategy<Value = i64> {
    prop_oneof![1_600_000_000_000..1_900_000_000_000i64, any::<i64>()]
}

pub fn activity() -> impl Strategy<Value = Event> {
    (
        (
            event_id(),
            user(),
            "[a-z][a-z0-9_]{0,15}",
            "[a-z]{1,8}:[0-9a-f]{1,20}",
            opt_text(),
        ),
        (
            time(),
            proptest::collection::vec(user(), 0..8),
            text(),
            attributes(),
            producer(),
        ),
    )
        .prop_map(
            |((id, actor, verb, object, target), (time_ms, to, text, attributes, producer))| {
                Event::Activity(Activity {
                    id,
                    actor,
                    verb,
                    object,
                    target,
                    time_ms,
                    to,
                    text,
                    attributes,
                    producer,
                })
            },
        )
}

pub fn retraction() -> impl Strategy<Value = Event> {
    (event_id(), event_id(), user(), time(), producer()).prop_map(
        |(id, activity_id, actor, time_ms, producer)| {
            Event::Retraction(Retraction {
                id,
                activity_id,
                actor,
                time_ms,
                producer,
            })
        },
    )
}

pub fn update() -> impl Strategy<Value = Event> {
    (
        event_id(),
        event_id(),
        user(),
        time(),
        opt_text(),
        attributes(),
        producer(),
    )
        .prop_map(
            |(id, activity_id, actor, time_ms, text, attributes, producer)| {
                Event::Update(Update {
                    id,
                    activity_id,
                    actor,
                    time_ms,
                    text,
                    attributes,
                    producer,
                })
            },
        )
}

pub fn graph_change() -> impl Strategy<Value = Event> {
    (
        event_id(),
        user(),
        user(),
        proptest::sample::select(GraphOp::ALL.to_vec()),
        time(),
        producer(),
    )
        .prop_map(|(id, actor, subject, op, time_ms, producer)| {
            Event::Graph(GraphChange {
                id,
                actor,
                subject,
                op,
                time_ms,
                producer,
            })
        })
}

/// Any event of any kind.
pub fn event() -> impl Strategy<Value = Event> {
    prop_oneof![activity(), retraction(), update(), graph_change()]
}
