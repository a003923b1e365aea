//! Running the processor chain (`tidings_core::process`) in the consumers: the swappable
//! handle behind hot reload, the store as processor state, side outputs as Kafka records, and
//! the chain's metrics.
//!
//! **Hot reload.** [`ChainHandle`] holds the current chain behind a lock; every clone of an
//! [`Applier`](crate::apply::Applier) shares it. `apply()` takes the chain **once per call**, so
//! a [`ChainHandle::swap`] lands between batches: a batch is decided wholly by the old chain or
//! wholly by the new one, and since its offsets commit with its effects nothing is lost or
//! doubled by a swap. The version (1 for the chain started with, +1 per swap) is exported as
//! `tidings_pipeline_chain_version`.
//!
//! **Side outputs** are rendered here ([`SideRecord`]) and sent by the batch's sink **before**
//! the batch commits, like dead letters: at-least-once. A crash between their acknowledgement
//! and the commit sends them again when the batch is re-applied, so consumers of a side topic
//! de-duplicate by the `tidings-event-id` header (with `tidings-processor`). A rebuild or a
//! restore never sends them again (they count them).
//!
//! Metrics (counted when the batch commits, so a retried batch counts once):
//! `tidings_processor_decisions_total{processor, outcome}` (outcome: next, term, jump, drop,
//! dead_letter), `tidings_processor_drops_total{processor, reason}`,
//! `tidings_processor_side_outputs_total{processor, topic}`.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use tidings_core::process::{
    Chain, Flow, Format, Origin, ProcessError, Run, SideOutput, StateView,
};
use tidings_store::{RangeOptions, ReadView};

use crate::apply::Record;

/// The chain the consumers run, swappable between batches (see the module doc).
#[derive(Clone, Debug)]
pub struct ChainHandle {
    inner: Arc<RwLock<(Arc<Chain>, u64)>>,
}

impl Default for ChainHandle {
    fn default() -> Self {
        ChainHandle::new(Chain::empty())
    }
}

impl ChainHandle {
    /// A handle starting with `chain` (version 1).
    pub fn new(chain: Arc<Chain>) -> Self {
        ChainHandle {
            inner: Arc::new(RwLock::new((chain, 1))),
        }
    }

    /// The current chain and its version.
    pub fn current(&self) -> (Arc<Chain>, u64) {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the chain from the next batch on; returns the new version.
    pub fn swap(&self, chain: Arc<Chain>) -> u64 {
        // Numbered and installed under one lock, so concurrent reloads (file watcher and
        // admin API) install in version order and the gauge names the chain in force.
        let mut current = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let v = current.1 + 1;
        *current = (chain, v);
        metrics::gauge!("tidings_pipeline_chain_version").set(v as f64);
        v
    }
}

/// A store read view (in the consumers: the batch's overlay) as processor state.
pub struct StoreState<'a>(pub &'a dyn ReadView);

impl std::fmt::Debug for StoreState<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreState(..)")
    }
}

impl StateView for StoreState<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProcessError> {
        self.0
            .get(key)
            .map_err(|e| ProcessError::State(e.to_string()))
    }

    fn count(&self, begin: &[u8], end: &[u8], limit: usize) -> Result<usize, ProcessError> {
        if limit == 0 {
            return Ok(0);
        }
        self.0
            .range(begin, end, RangeOptions::forward(limit))
            .map(|rows| rows.len())
            .map_err(|e| ProcessError::State(e.to_string()))
    }
}

/// Where a record came from, for the chain.
pub fn origin(r: &Record) -> Origin {
    Origin {
        topic: r.topic.clone(),
        partition: r.partition,
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
    }
}

/// A side output ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideRecord {
    /// The processor that pushed it.
    pub processor: String,
    /// Destination topic.
    pub topic: String,
    /// Record key: the source record's (the actor's id).
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub payload: Vec<u8>,
    /// Headers: `tidings-event-id`, `tidings-processor`, `tidings-note`, `tidings-format`,
    /// `tidings-source-topic`, `tidings-source-partition`, `tidings-source-offset`.
    pub headers: Vec<(String, String)>,
}

/// Renders a side output of the event consumed from `r`: `avro` is the record as consumed
/// (re-encoded if a processor changed the event), `json` a document with the event, the
/// processor, the note and the source position.
pub fn render(s: &SideOutput, r: &Record) -> SideRecord {
    let payload = match s.format {
        Format::Avro => match (&r.payload, s.changed) {
            (Some(p), false) => p.clone(),
            _ => tidings_schemas::encode(&s.event),
        },
        Format::Json => serde_json::json!({
            "processor": s.processor,
            "note": s.note,
            "event": s.event,
            "source": {
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp_ms": r.timestamp_ms,
            },
        })
        .to_string()
        .into_bytes(),
    };
    let headers = vec![
        ("tidings-event-id".to_string(), s.event.id().to_string()),
        ("tidings-processor".to_string(), s.processor.clone()),
        ("tidings-note".to_string(), s.note.clone()),
        ("tidings-format".to_string(), s.format.as_str().to_string()),
        ("tidings-source-topic".to_string(), r.topic.clone()),
        (
            "tidings-source-partition".to_string(),
            r.partition.to_string(),
        ),
        ("tidings-source-offset".to_string(), r.offset.to_string()),
    ];
    SideRecord {
        processor: s.processor.clone(),
        topic: s.topic.clone(),
        key: r
            .key
            .clone()
            .or_else(|| Some(s.event.kafka_key().into_bytes())),
        payload,
        headers,
    }
}

/// Counts of one batch's chain decisions, exported when it commits.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    decisions: BTreeMap<(String, &'static str), u64>,
    drops: BTreeMap<(String, String), u64>,
    sides: BTreeMap<(String, String), u64>,
}

impl Tally {
    /// Adds what the chain did for one event.
    pub(crate) fn add(&mut self, run: &Run) {
        for s in &run.steps {
            *self
                .decisions
                .entry((s.processor.clone(), s.flow.label()))
                .or_default() += 1;
            if let Flow::Drop { reason } = &s.flow {
                *self
                    .drops
                    .entry((s.processor.clone(), reason.clone()))
                    .or_default() += 1;
            }
        }
        for o in &run.side_outputs {
            *self
                .sides
                .entry((o.processor.clone(), o.topic.clone()))
                .or_default() += 1;
        }
    }

    /// Exports the counts.
    pub(crate) fn export(self) {
        for ((processor, outcome), n) in self.decisions {
            metrics::counter!("tidings_processor_decisions_total", "processor" => processor, "outcome" => outcome)
                .increment(n);
        }
        for ((processor, reason), n) in self.drops {
            metrics::counter!("tidings_processor_drops_total", "processor" => processor, "reason" => reason)
                .increment(n);
        }
        for ((processor, topic), n) in self.sides {
            metrics::counter!("tidings_processor_side_outputs_total", "processor" => processor, "topic" => topic)
                .increment(n);
        }
    }
}
