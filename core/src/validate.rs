//! Field validation: what a well-formed event looks like.
//!
//! The same rules run in the ingest gateway (400 with the field's name) and in the consumers
//! (dead letter with the reason), so an event that got past a non-Rust producer is still held to
//! them. Limits keep every store value far below FoundationDB's 100 kB value limit.

use thiserror::Error;

use crate::event::{Activity, Event, GraphChange, Producer, Retraction, Update, UserId};

/// Longest allowed `text`, in bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Longest allowed verb, in bytes.
pub const MAX_VERB_BYTES: usize = 32;
/// Longest allowed object / target reference, in bytes.
pub const MAX_REF_BYTES: usize = 256;
/// Most explicit recipients (`to`) on one activity.
pub const MAX_RECIPIENTS: usize = 256;
/// Most extra attributes on one activity.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest attribute key, in bytes.
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 64;
/// Longest attribute value, in bytes.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 2048;
/// Longest producer name or version, in bytes.
pub const MAX_PRODUCER_BYTES: usize = 64;

/// Why an event is invalid. `field` names the offending field as it appears in the JSON and
/// Avro forms, so a 400 or a dead letter tells the producer exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid field `{field}`: {reason}")]
pub struct ValidationError {
    /// The field, e.g. `actor`, `verb`, `to[3]`.
    pub field: String,
    /// What is wrong with it and what is expected.
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        reason: reason.into(),
    }
}

fn user(field: &str, id: UserId) -> Result<(), ValidationError> {
    if id < 0 {
        return Err(err(
            field,
            format!("user ids are non-negative integers, got {id}"),
        ));
    }
    Ok(())
}

fn time(t: i64) -> Result<(), ValidationError> {
    if t <= 0 {
        return Err(err(
            "time_ms",
            format!("expected milliseconds since the Unix epoch (> 0), got {t}"),
        ));
    }
    Ok(())
}

fn producer(p: &Producer) -> Result<(), ValidationError> {
    if p.name.is_empty() || p.name.len() > MAX_PRODUCER_BYTES {
        return Err(err(
            "producer.name",
            format!("expected 1..={MAX_PRODUCER_BYTES} bytes naming the publishing service"),
        ));
    }
    if p.version.len() > MAX_PRODUCER_BYTES {
        return Err(err(
            "producer.version",
            format!("at most {MAX_PRODUCER_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Checks a verb: 1..=32 bytes of lowercase ASCII letters, digits or `_`, starting with a letter.
pub fn verb(v: &str) -> Result<(), ValidationError> {
    let ok = !v.is_empty()
        && v.len() <= MAX_VERB_BYTES
        && v.as_bytes()[0].is_ascii_lowercase()
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err(err(
            "verb",
            format!(
                "expected 1..={MAX_VERB_BYTES} lowercase ASCII letters, digits or '_' starting with a letter, got {v:?}"
            ),
        ));
    }
    Ok(())
}

fn reference(field: &str, r: &str) -> Result<(), ValidationError> {
    if r.is_empty() || r.len() > MAX_REF_BYTES {
        return Err(err(
            field,
            format!(
                "expected a reference of 1..={MAX_REF_BYTES} bytes, got {} bytes",
                r.len()
            ),
        ));
    }
    Ok(())
}

fn text(field: &str, t: &str) -> Result<(), ValidationError> {
    if t.len() > MAX_TEXT_BYTES {
        return Err(err(
            field,
            format!("text is {} bytes, the limit is {MAX_TEXT_BYTES}", t.len()),
        ));
    }
    Ok(())
}

fn attributes(a: &std::collections::BTreeMap<String, String>) -> Result<(), ValidationError> {
    if a.len() > MAX_ATTRIBUTES {
        return Err(err(
            "attributes",
            format!("{} attributes, the limit is {MAX_ATTRIBUTES}", a.len()),
        ));
    }
    for (k, v) in a {
        if k.is_empty() || k.len() > MAX_ATTRIBUTE_KEY_BYTES {
            return Err(err(
                format!("attributes.{k}"),
                format!("attribute keys are 1..={MAX_ATTRIBUTE_KEY_BYTES} bytes"),
            ));
        }
        if v.len() > MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(err(
                format!("attributes.{k}"),
                format!("attribute values are at most {MAX_ATTRIBUTE_VALUE_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// Checks an activity.
pub fn activity(a: &Activity) -> Result<(), ValidationError> {
    user("actor", a.actor)?;
    verb(&a.verb)?;
    reference("object", &a.object)?;
    if let Some(t) = &a.target {
        reference("target", t)?;
    }
    time(a.time_ms)?;
    if a.to.len() > MAX_RECIPIENTS {
        return Err(err(
            "to",
            format!("{} recipients, the limit is {MAX_RECIPIENTS}", a.to.len()),
        ));
    }
    for (i, r) in a.to.iter().enumerate() {
        user(&format!("to[{i}]"), *r)?;
    }
    text("text", &a.text)?;
    attributes(&a.attributes)?;
    producer(&a.producer)
}

/// Checks a retraction.
pub fn retraction(r: &Retraction) -> Result<(), ValidationError> {
    user("actor", r.actor)?;
    time(r.time_ms)?;
    producer(&r.producer)
}

/// Checks an update.
pub fn update(u: &Update) -> Result<(), ValidationError> {
    user("actor", u.actor)?;
    time(u.time_ms)?;
    if let Some(t) = &u.text {
        text("text", t)?;
    }
    attributes(&u.attributes)?;
    producer(&u.producer)
}

/// Checks a graph change.
pub fn graph(g: &GraphChange) -> Result<(), ValidationError> {
    user("actor", g.actor)?;
    user("subject", g.subject)?;
    if g.actor == g.subject {
        return Err(err("subject", format!("a user cannot {} themselves", g.op)));
    }
    time(g.time_ms)?;
    producer(&g.producer)
}

/// Checks any event.
pub fn event(e: &Event) -> Result<(), ValidationError> {
    match e {
        Event::Activity(a) => activity(a),
        Event::Retraction(r) => retraction(r),
        Event::Update(u) => update(u),
        Event::Graph(g) => graph(g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventId;

    fn sample() -> Activity {
        Activity {
            id: EventId::MIN,
            actor: 7,
            verb: "post".into(),
            object: "post:1".into(),
            target: None,
            time_ms: 1_700_000_000_000,
            to: vec![1, 2],
            text: "hello".into(),
            attributes: Default::default(),
            producer: Producer::new("posts-api", "1.0.0"),
        }
    }

    #[test]
    fn accepts_a_well_formed_activity() {
        assert_eq!(activity(&sample()), Ok(()));
    }

    #[test]
    fn names_the_bad_field() {
        let mut a = sample();
        a.actor = -1;
        assert_eq!(activity(&a).unwrap_err().field, "actor");
        let mut a = sample();
        a.verb = String::new();
        assert_eq!(activity(&a).unwrap_err().field, "verb");
        let mut a = sample();
        a.verb = "Post".into();
        assert_eq!(activity(&a).unwrap_err().field, "verb");
        let mut a = sample();
        a.text = "x".repeat(MAX_TEXT_BYTES + 1);
        assert_eq!(activity(&a).unwrap_err().field, "text");
        let mut a = sample();
        a.to = vec![3, -4];
        assert_eq!(activity(&a).unwrap_err().field, "to[1]");
        let mut a = sample();
        a.producer.name.clear();
        assert_eq!(activity(&a).unwrap_err().field, "producer.name");
    }

    #[test]
    fn self_follow_is_rejected() {
        let g = GraphChange {
            id: EventId::MIN,
            actor: 3,
            subject: 3,
            op: crate::event::GraphOp::Follow,
            time_ms: 1,
            producer: Producer::new("graph-api", "1"),
        };
        let e = graph(&g).unwrap_err();
        assert_eq!(e.field, "subject");
        assert!(e.to_string().contains("follow themselves"), "{e}");
    }
}
