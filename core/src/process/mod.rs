//! The processor chain: business rules between decoding an event and projecting it
//! (DESIGN.md, "Processor chain").
//!
//! A [`Chain`] is an ordered list of processors built from the config file's
//! `[[pipeline.processor]]` tables ([`config`]). The consumers run it on every decoded event,
//! before fan-out planning. Each processor returns a [`Flow`]:
//!
//! | flow | effect |
//! |---|---|
//! | `Next` | go on with the next processor; past the last one the event is projected |
//! | `Term` | stop: the event is not projected, nothing more is written (counted as terminated) |
//! | `Jump(id)` | continue at processor `id`, which must come **later** in the chain (checked when the chain is built, so every chain terminates) |
//! | `Drop{reason}` | discard the event, counted by reason |
//! | `DeadLetter{code, reason}` | the event goes to the dead letter topic, like an undecodable record |
//!
//! Besides its flow a processor may push **side outputs** — the event's record (`avro`) or a
//! JSON document (`json`) to another topic — which never change what the rest of the chain
//! does; it may **transform** the event (`mentions` adds recipients) and set **fan-out options**
//! (`route`, `block_mute_filter`). Decisions already taken stand when a later processor stops
//! the event: state written by an earlier processor and side outputs pushed before stay.
//!
//! **State is in the store.** Stateful processors (`dedupe`, `rate_limit`) read through a
//! [`StateView`] (the consumer's view of the batch being built: the snapshot plus the batch's
//! own pending writes) and return mutations of the `prc` keyspace
//! ([`keys::procstate`](crate::keys::procstate)) that go into the same atomic store batch as the
//! event's effects and the consumer's offsets. So a decision is taken exactly once across
//! crashes, and a rebuild makes the same decisions. Time in processors is the **log time**
//! ([`Origin::log_time_ms`]: the record timestamp if present, else the event time), never the
//! wall clock.
//!
//! **Resuming.** A fan-out split over several batches that is resumed from its stored cursor
//! (after a crash) was already admitted by the chain whose state was committed with its first
//! step: run with [`Input::resuming`], stateful processors pass without reading or writing
//! state, side outputs are not pushed again, and the verdict is always to project; pure
//! transformations run again and give the same fan-out options and event.
//!
//! Layout: this file (flows, the run loop), [`config`] (the TOML form and validation),
//! `validate`, `stateful` (dedupe, rate limit), `shape` (mentions, route, block/mute filter),
//! `rule` and `expr` (the rule processor over a rhai expression).
//!
//! Non-goals: I/O (the consumers commit mutations and send side outputs), metrics (the
//! consumers count [`Run::steps`]), and cross-event joins beyond what the state keyspace holds.

pub mod config;
mod expr;
mod rule;
mod shape;
mod stateful;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::event::Event;
use crate::fanout::FanoutOptions;
use crate::keys::Projection;
use crate::write::Mutation;

pub use config::{EmitConfig, Format, PipelineConfig, ProcessorConfig};

/// Why a chain could not be built or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// The configuration is invalid: fix the named processor's table in the config file.
    #[error("processor `{processor}`: {message}")]
    Config {
        /// The processor's `id` (or its position when it has none).
        processor: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// Reading processor state failed: the batch is retried (nothing of it was written).
    #[error("processor state: {0}")]
    State(String),
}

/// What stateful processors read: one consistent view including the writes of the events
/// before this one in the same batch.
pub trait StateView {
    /// The value of `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProcessError>;
    /// How many keys lie in `begin..end`, counting at most `limit`.
    fn count(&self, begin: &[u8], end: &[u8], limit: usize) -> Result<usize, ProcessError>;
}

/// A [`StateView`] with nothing in it (dry runs from an empty state, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct EmptyState;

impl StateView for EmptyState {
    fn get(&self, _key: &[u8]) -> Result<Option<Vec<u8>>, ProcessError> {
        Ok(None)
    }
    fn count(&self, _begin: &[u8], _end: &[u8], _limit: usize) -> Result<usize, ProcessError> {
        Ok(0)
    }
}

/// What a processor decided for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the next processor.
    Next,
    /// Stop: the event is not projected.
    Term,
    /// Continue at the processor with this id (always a later one).
    Jump(String),
    /// Discard the event.
    Drop {
        /// Why (a metric label: keep it to a few fixed words).
        reason: String,
    },
    /// Send the event to the dead letter topic.
    DeadLetter {
        /// Machine-readable reason (the `reason-code` header and the metric label).
        code: String,
        /// What is wrong, for people.
        reason: String,
    },
}

impl Flow {
    /// The outcome label of metrics: `next`, `term`, `jump`, `drop`, `dead_letter`.
    pub fn label(&self) -> &'static str {
        match self {
            Flow::Next => "next",
            Flow::Term => "term",
            Flow::Jump(_) => "jump",
            Flow::Drop { .. } => "drop",
            Flow::DeadLetter { .. } => "dead_letter",
        }
    }
}

/// Where the event comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// Source topic (`-` for events read from a file).
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset (the line number for events read from a file).
    pub offset: i64,
    /// The record's timestamp, ms since the epoch, if it has one.
    pub timestamp_ms: Option<i64>,
}

impl Origin {
    /// The time processors work in: the record timestamp if present, else the event's time.
    pub fn log_time_ms(&self, event: &Event) -> i64 {
        self.timestamp_ms.unwrap_or_else(|| event.time_ms())
    }
}

/// One event given to [`Chain::run`].
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The decoded event.
    pub event: &'a Event,
    /// Where it comes from.
    pub origin: &'a Origin,
    /// A split fan-out resumed from its stored cursor (see the module doc).
    pub resuming: bool,
}

/// A side output: something to send to another topic (before the batch commits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideOutput {
    /// The processor that pushed it.
    pub processor: String,
    /// The topic to send it to.
    pub topic: String,
    /// What to send: the event's record or a JSON document.
    pub format: Format,
    /// Why, for the `tidings-note` header and the JSON document.
    pub note: String,
    /// The event as it was at that point of the chain.
    pub event: Event,
    /// Whether a processor had changed the event by then (an `avro` side output is then the
    /// re-encoded event rather than the original record).
    pub changed: bool,
}

/// What the chain decided in the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Project the event (it fell off the end of the chain).
    Project,
    /// A processor stopped it.
    Term {
        /// The processor.
        by: String,
    },
    /// A processor dropped it.
    Drop {
        /// The processor.
        by: String,
        /// Why.
        reason: String,
    },
    /// A processor sent it to the dead letter topic.
    DeadLetter {
        /// The processor.
        by: String,
        /// Machine-readable reason.
        code: String,
        /// What is wrong, for people.
        reason: String,
    },
}

/// What one processor did to one event (for metrics and `tidings pipeline test`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepRecord {
    /// The processor's id.
    pub processor: String,
    /// Its kind.
    pub kind: &'static str,
    /// Its flow.
    pub flow: Flow,
    /// What it did, for people (`added 2 mentions`, `routed to notifications`, …).
    pub note: Option<String>,
    /// Topics it pushed side outputs to.
    pub emitted: Vec<String>,
}

/// The result of running the chain on one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// What to do with the event.
    pub verdict: Verdict,
    /// The event after the chain's transformations.
    pub event: Event,
    /// Whether a processor changed it (store the re-encoded body, not the original record).
    pub changed: bool,
    /// How it fans out.
    pub fanout: FanoutOptions,
    /// State writes, for the same store batch as the event's effects.
    pub mutations: Vec<Mutation>,
    /// Side outputs, to send before that batch commits.
    pub side_outputs: Vec<SideOutput>,
    /// Every processor that ran, in order.
    pub steps: Vec<StepRecord>,
}

/// What a processor returns: its flow, whether it matched (its `emit` fires), a note.
#[derive(Debug)]
pub(crate) struct Decision {
    pub flow: Flow,
    pub matched: bool,
    pub note: Option<String>,
}

impl Decision {
    pub(crate) fn next() -> Self {
        Decision {
            flow: Flow::Next,
            matched: false,
            note: None,
        }
    }

    pub(crate) fn matched(flow: Flow, note: impl Into<String>) -> Self {
        Decision {
            flow,
            matched: true,
            note: Some(note.into()),
        }
    }
}

/// What a processor works on.
pub(crate) struct Ctx<'a> {
    pub p: Projection,
    pub id: &'a str,
    pub event: Event,
    pub changed: bool,
    pub origin: &'a Origin,
    pub log_time_ms: i64,
    pub resuming: bool,
    pub state: &'a dyn StateView,
    pub mutations: Vec<Mutation>,
    /// State writes that stand only if the event is not deferred (dedupe records: a deferred
    /// event comes back under the same id and must not be its own duplicate); they follow
    /// `mutations` in the run.
    pub unless_deferred: Vec<Mutation>,
    pub fanout: FanoutOptions,
    pub side: Vec<SideOutput>,
}

impl Ctx<'_> {
    /// Pushes a side output of the event as it is now.
    pub fn emit(&mut self, topic: &str, format: Format, note: String) {
        if self.resuming {
            return;
        }
        self.side.push(SideOutput {
            processor: self.id.to_string(),
            topic: topic.to_string(),
            format,
            note,
            event: self.event.clone(),
            changed: self.changed,
        });
    }
}

/// One kind of processor.
pub(crate) trait Processor: Send + Sync + fmt::Debug {
    fn process(&self, cx: &mut Ctx<'_>) -> Result<Decision, ProcessError>;
    /// Topics it sends side outputs to by itself (besides `emit`).
    fn topics(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One configured processor.
#[derive(Debug)]
struct Slot {
    id: String,
    kind: &'static str,
    emit: Option<EmitConfig>,
    processor: Box<dyn Processor>,
}

/// An ordered chain of processors, validated and compiled (build it once per config).
#[derive(Debug, Default)]
pub struct Chain {
    slots: Vec<Slot>,
    index: HashMap<String, usize>,
    fingerprint: u64,
}

/// `(id, kind)` of every processor, in order: what a reload reports.
pub type Summary = Vec<(String, String)>;

impl Chain {
    /// The empty chain: every event is projected as it is.
    pub fn empty() -> Arc<Chain> {
        Arc::new(Chain::default())
    }

    /// Builds and checks a chain (unique ids, forward jumps to known ids, valid parameters,
    /// expressions that compile).
    pub fn build(cfg: &PipelineConfig) -> Result<Chain, ProcessError> {
        config::build(cfg)
    }

    /// Whether there is no processor.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// How many processors.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// A stable hash of the configuration the chain was built from (FNV-1a over its debug
    /// form): a rebuild records it so a resumed rebuild runs the same chain.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Every topic the chain may send side outputs to, sorted, without repeats (to create them
    /// before the consumers start).
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .slots
            .iter()
            .flat_map(|s| {
                let mut t = s.processor.topics();
                t.extend(s.emit.iter().map(|e| e.topic.clone()));
                t
            })
            .collect();
        t.sort();
        t.dedup();
        t
    }

    /// `(id, kind)` of every processor, in order.
    pub fn summary(&self) -> Summary {
        self.slots
            .iter()
            .map(|s| (s.id.clone(), s.kind.to_string()))
            .collect()
    }

    /// Runs the chain on one event of projection `p`.
    pub fn run(
        &self,
        p: Projection,
        input: Input<'_>,
        state: &dyn StateView,
    ) -> Result<Run, ProcessError> {
        let mut cx = Ctx {
            p,
            id: "",
            event: input.event.clone(),
            changed: false,
            origin: input.origin,
            log_time_ms: input.origin.log_time_ms(input.event),
            resuming: input.resuming,
            state,
            mutations: Vec::new(),
            unless_deferred: Vec::new(),
            fanout: FanoutOptions::default(),
            side: Vec::new(),
        };
        let mut steps = Vec::new();
        let mut verdict = Verdict::Project;
        let mut i = 0;
        while let Some(slot) = self.slots.get(i) {
            cx.id = &slot.id;
            let before = cx.side.len();
            let d = slot.processor.process(&mut cx)?;
            if d.matched {
                if let Some(e) = &slot.emit {
                    let note = e
                        .note
                        .clone()
                        .or_else(|| d.note.clone())
                        .unwrap_or_else(|| slot.kind.to_string());
                    cx.emit(&e.topic, e.format, note);
                }
            }
            let emitted = cx.side[before..].iter().map(|s| s.topic.clone()).collect();
            steps.push(StepRecord {
                processor: slot.id.clone(),
                kind: slot.kind,
                flow: d.flow.clone(),
                note: d.note,
                emitted,
            });
            let by = slot.id.clone();
            match d.flow {
                Flow::Next => i += 1,
                Flow::Jump(target) => match self.index.get(&target) {
                    Some(&j) if j > i => i = j,
                    _ => {
                        return Err(ProcessError::Config {
                            processor: by,
                            message: format!("jump to `{target}`, which is not a later processor"),
                        })
                    }
                },
                Flow::Term => {
                    verdict = Verdict::Term { by };
                    break;
                }
                Flow::Drop { reason } => {
                    verdict = Verdict::Drop { by, reason };
                    break;
                }
                Flow::DeadLetter { code, reason } => {
                    verdict = Verdict::DeadLetter { by, code, reason };
                    break;
                }
            }
        }
        if input.resuming {
            // Admitted when its first step was committed; transformations only.
            verdict = Verdict::Project;
        }
        if !matches!(&verdict, Verdict::Drop { reason, .. } if reason == stateful::DEFERRED) {
            cx.mutations.append(&mut cx.unless_deferred);
        }
        Ok(Run {
            verdict,
            event: cx.event,
            changed: cx.changed,
            fanout: cx.fanout,
            mutations: cx.mutations,
            side_outputs: cx.side,
            steps,
        })
    }
}
