//! The chain's configuration: the `[[pipeline.processor]]` tables of the config file.
//!
//! Every table has an `id` (unique; `[A-Za-z0-9_-]`, at most 64 bytes: it names the
//! processor in metrics, state keys and side-output headers), a `kind`, the kind's own keys,
//! and optionally `emit = { topic = "…", format = "json" | "avro", note = "…" }`: a side output
//! every time the processor *matches* (see each kind). Unknown keys are errors. [`build`]
//! checks what serde cannot: unique ids, forward jumps to known ids, positive windows, and
//! that every rule's expression compiles — so a bad file is refused as a whole, naming the
//! processor, and never half-applied.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{rule, shape, stateful, validate, Chain, ProcessError, Processor, Slot};

/// `[pipeline]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The processors, in order (`[[pipeline.processor]]`); empty: events are projected as
    /// they come.
    #[serde(default)]
    pub processor: Vec<ProcessorConfig>,
}

/// One `[[pipeline.processor]]`, by `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProcessorConfig {
    /// Field rules beyond the schema; a failing event goes to the dead letter topic.
    Validate(validate::ValidateConfig),
    /// Drops a re-published event (same id) within a window of log time.
    Dedupe(stateful::DedupeConfig),
    /// Skips followers (and recipients) who block or mute the actor at fan-out.
    BlockMuteFilter(shape::BlockMuteConfig),
    /// Holds each actor to a number of events per window of log time.
    RateLimit(stateful::RateLimitConfig),
    /// `@<user id>` in the text notifies that user.
    Mentions(shape::MentionsConfig),
    /// Which feeds activities of some verbs go to.
    Route(shape::RouteConfig),
    /// An expression over event fields decides the flow.
    Rule(rule::RuleConfig),
}

/// `emit = { … }`: a side output whenever the processor matches.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitConfig {
    /// The topic to send to (created beforehand, like the input topics).
    pub topic: String,
    /// `json` (default): a document with the event, the processor and the note; `avro`: the
    /// event's record as consumed (re-encoded if a processor changed it), readable by tidings.
    #[serde(default)]
    pub format: Format,
    /// The note sent along (`tidings-note` header, `note` field); default: what the
    /// processor says it did.
    pub note: Option<String>,
}

/// How a side output is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `{"processor", "note", "event", "source": {topic, partition, offset}, "log_time_ms"}`.
    #[default]
    Json,
    /// The event's Avro single-object record.
    Avro,
}

impl Format {
    /// `json` or `avro`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Avro => "avro",
        }
    }
}

pub(crate) fn config_error(id: &str, message: impl Into<String>) -> ProcessError {
    ProcessError::Config {
        processor: id.to_string(),
        message: message.into(),
    }
}

fn check_id(id: &str, position: usize) -> Result<(), ProcessError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(config_error(
            &format!("#{}", position + 1),
            format!("id {id:?}: expected 1..=64 ASCII letters, digits, '_' or '-'"),
        ));
    }
    Ok(())
}

/// Checks a Kafka topic name.
pub(crate) fn check_topic(id: &str, key: &str, topic: &str) -> Result<(), ProcessError> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if !ok {
        return Err(config_error(
            id,
            format!("{key} {topic:?}: expected a Kafka topic name (1..=249 of A-Z a-z 0-9 . _ -)"),
        ));
    }
    Ok(())
}

/// Checks a list of verbs.
pub(crate) fn check_verbs(id: &str, key: &str, verbs: &[String]) -> Result<(), ProcessError> {
    for v in verbs {
        crate::validate::verb(v)
            .map_err(|e| config_error(id, format!("{key}: {v:?} is not a verb ({})", e.reason)))?;
    }
    Ok(())
}

impl ProcessorConfig {
    /// The processor's id.
    pub fn id(&self) -> &str {
        self.common().0
    }

    /// Its kind, as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorConfig::Validate(_) => "validate",
            ProcessorConfig::Dedupe(_) => "dedupe",
            ProcessorConfig::BlockMuteFilter(_) => "block_mute_filter",
            ProcessorConfig::RateLimit(_) => "rate_limit",
            ProcessorConfig::Mentions(_) => "mentions",
            ProcessorConfig::Route(_) => "route",
            ProcessorConfig::Rule(_) => "rule",
        }
    }

    fn common(&self) -> (&str, Option<&EmitConfig>) {
        match self {
            ProcessorConfig::Validate(c) => (&c.id, c.emit.as_ref()),
            ProcessorConfig::Dedupe(c) => (&c.id, c.emit.as_ref()),
            ProcessorConfig::BlockMuteFilter(c) => (&c.id, c.emit.as_ref()),
            ProcessorConfig::RateLimit(c) => (&c.id, c.emit.as_ref()),
            ProcessorConfig::Mentions(c) => (&c.id, c.emit.as_ref()),
            ProcessorConfig::Route(c) => (&c.id, c.emit.as_ref()),
            ProcessorConfig::Rule(c) => (&c.id, c.emit.as_ref()),
        }
    }

    fn compile(&self, ids: &[&str], at: usize) -> Result<Box<dyn Processor>, ProcessError> {
        Ok(match self {
            ProcessorConfig::Validate(c) => Box::new(validate::Validate::new(c)?),
            ProcessorConfig::Dedupe(c) => Box::new(stateful::Dedupe::new(c)?),
            ProcessorConfig::BlockMuteFilter(c) => Box::new(shape::BlockMute::new(c)?),
            ProcessorConfig::RateLimit(c) => Box::new(stateful::RateLimit::new(c)?),
            ProcessorConfig::Mentions(c) => Box::new(shape::Mentions::new(c)?),
            ProcessorConfig::Route(c) => Box::new(shape::Route::new(c)?),
            ProcessorConfig::Rule(c) => Box::new(rule::Rule::new(c, ids, at)?),
        })
    }
}

/// Builds a [`Chain`] from its configuration (see the module doc for what is checked).
pub fn build(cfg: &PipelineConfig) -> Result<Chain, ProcessError> {
    let ids: Vec<&str> = cfg.processor.iter().map(ProcessorConfig::id).collect();
    let mut index = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        check_id(id, i)?;
        if index.insert(id.to_string(), i).is_some() {
            return Err(config_error(
                id,
                "this id is used by more than one processor; ids must be unique",
            ));
        }
    }
    let mut slots = Vec::with_capacity(cfg.processor.len());
    for (i, pc) in cfg.processor.iter().enumerate() {
        let (id, emit) = pc.common();
        if let Some(e) = emit {
            check_topic(id, "emit.topic", &e.topic)?;
        }
        slots.push(Slot {
            id: id.to_string(),
            kind: pc.kind(),
            emit: emit.cloned(),
            processor: pc.compile(&ids, i)?,
        });
    }
    let fingerprint = format!("{:?}", cfg.processor)
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    Ok(Chain {
        slots,
        index,
        fingerprint,
    })
}
