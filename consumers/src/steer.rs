//! Steering and watching a running consume loop: pause and resume on an operator's request,
//! and lag per partition.
//!
//! - **Pause** ([`Pauser`]): between batches the loop compares what [`Control`] asks for with
//!   what it does. To pause it finishes the batch in flight, pauses every assigned partition
//!   with librdkafka's `pause` and goes on polling (so it keeps its group membership and
//!   serves rebalances), then acknowledges the request. A record the client still hands out
//!   while paused is not applied: it is dropped. On resume every assigned partition is sought
//!   back to its stored offset (librdkafka would fetch from the last record it delivered,
//!   which tansu 0.6 mishandles inside a record batch), so nothing is lost and the stored
//!   offsets keep anything from being applied twice. Partitions assigned during the pause are
//!   paused as they come.
//! - **Lag** ([`Monitor::partitions`], [`LagExporter`]): high watermark minus stored next
//!   offset, per owned partition. The high watermark is the one fetch answers carry, taken from
//!   librdkafka's statistics (see [`Watermarks`]), because tansu 0.6's ListOffsets(latest) can
//!   be wrong. A paused partition is not fetched, so its watermark (and lag) stays where it
//!   was when the pause began.
//!
//! Non-goals: pausing single partitions, or coordinating pauses across processes (each
//! process has its own [`Control`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use tidings_core::control::Control;

use crate::apply::{Positions, Stats, TopicPartition};
use crate::log::Watermarks;

/// One owned partition as the loop sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The stored next offset (`None`: nothing applied yet).
    pub stored: Option<i64>,
    /// The high watermark the last fetch answer reported (`None`: no answer yet).
    pub high_watermark: Option<i64>,
    /// `high_watermark - stored` (records not applied yet), when the watermark is known.
    pub lag: Option<i64>,
}

/// A read-only view of a running consume loop, for readiness checks and the admin API.
#[derive(Clone, Debug)]
pub struct Monitor {
    pub(crate) positions: Arc<Mutex<Positions>>,
    pub(crate) marks: Arc<Watermarks>,
    pub(crate) control: Arc<Control>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) running: Arc<AtomicBool>,
}

impl Monitor {
    /// Every owned partition with its lag, in (topic, partition) order.
    pub fn partitions(&self) -> Vec<PartitionLag> {
        let pos: BTreeMap<TopicPartition, Option<i64>> = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(tp, off)| (tp.clone(), *off))
            .collect();
        pos.into_iter()
            .map(|((topic, partition), stored)| {
                let high_watermark = self.marks.get(&(topic.clone(), partition));
                PartitionLag {
                    lag: high_watermark.map(|hi| (hi - stored.unwrap_or(0)).max(0)),
                    topic,
                    partition,
                    stored,
                    high_watermark,
                }
            })
            .collect()
    }

    /// Whether the loop has paused its partitions on an operator's request.
    pub fn paused(&self) -> bool {
        self.control.consumers_paused()
    }

    /// The switches the loop obeys.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Running totals.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Whether the loop thread still runs (false after it stopped or failed).
    pub fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }
}

/// The pause state of one consume loop.
#[derive(Debug, Default)]
pub(crate) struct Pauser {
    /// Paused now.
    paused: bool,
    /// Partitions paused with librdkafka.
    held: HashSet<TopicPartition>,
}

impl Pauser {
    /// Carries out what `control` asks for (call between batches). Returns the partitions to
    /// seek back to their stored offsets (after a resume).
    pub(crate) fn step<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        control: &Control,
    ) -> Vec<TopicPartition> {
        let (ticket, pause) = control.pending();
        let mut seek = Vec::new();
        if pause && !self.paused {
            self.paused = true;
            self.hold_new(consumer);
            metrics::gauge!("tidings_consumer_paused").set(1.0);
            tracing::warn!(
                partitions = self.held.len(),
                "consumers paused by an operator: nothing is applied until POST /v1/admin/consumers/resume"
            );
        } else if !pause && self.paused {
            // The current assignment: partitions revoked meanwhile are no longer ours.
            let assigned = consumer
                .assignment()
                .and_then(|tpl| consumer.resume(&tpl).map(|()| tpl));
            let assigned = match assigned {
                Ok(tpl) => tpl,
                Err(e) => {
                    tracing::error!(error = %e, "resume failed; retrying before the next poll");
                    return seek;
                }
            };
            self.paused = false;
            self.held.clear();
            // Every partition back to its stored offset, also any that handed out a record
            // while paused (not applied): librdkafka dropped what it had fetched beyond the
            // records delivered and would fetch again from there, mostly inside a record
            // batch, which tansu 0.6 answers with the next batch or nothing. Sought, each is
            // positioned and checked as after a restart.
            seek = assigned
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            metrics::gauge!("tidings_consumer_paused").set(0.0);
            tracing::warn!("consumers resumed by an operator");
        } else if self.paused {
            // Partitions assigned by a rebalance during the pause start paused too.
            self.hold_new(consumer);
        }
        control.acknowledge(ticket);
        seek
    }

    /// Whether the loop is paused.
    pub(crate) fn paused(&self) -> bool {
        self.paused
    }

    fn hold_new<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let Ok(assigned) = consumer.assignment() else {
            return;
        };
        // Forget partitions revoked meanwhile: one revoked and assigned back during the pause
        // comes back unpaused and must be paused again.
        let now: HashSet<TopicPartition> = assigned
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        self.held.retain(|tp| now.contains(tp));
        let mut tpl = rdkafka::TopicPartitionList::new();
        for e in assigned.elements() {
            let tp = (e.topic().to_string(), e.partition());
            if !self.held.contains(&tp) {
                let _ = tpl.add_partition(&tp.0, tp.1);
                self.held.insert(tp);
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = consumer.pause(&tpl) {
                tracing::error!(error = %e, "pause failed; records are still not applied");
            }
        }
    }
}

/// Exports `tidings_consumer_lag{topic,partition}` and `tidings_consumer_partitions`. A
/// partition this loop no longer owns is set to 0 (its new owner reports it), so summing over
/// instances stays right.
#[derive(Debug, Default)]
pub(crate) struct LagExporter {
    exported: HashSet<TopicPartition>,
}

impl LagExporter {
    pub(crate) fn export(&mut self, monitor: &Monitor) {
        let parts = monitor.partitions();
        let owned: HashSet<TopicPartition> = parts
            .iter()
            .map(|p| (p.topic.clone(), p.partition))
            .collect();
        for gone in self.exported.difference(&owned) {
            metrics::gauge!("tidings_consumer_lag", "topic" => gone.0.clone(), "partition" => gone.1.to_string())
                .set(0.0);
        }
        for p in &parts {
            if let Some(lag) = p.lag {
                metrics::gauge!("tidings_consumer_lag", "topic" => p.topic.clone(), "partition" => p.partition.to_string())
                    .set(lag as f64);
            }
        }
        metrics::gauge!("tidings_consumer_partitions").set(parts.len() as f64);
        self.exported = owned;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stats_json(hi: &[(&str, i32, i64)]) -> Vec<u8> {
        let mut topics = serde_json::Map::new();
        for (t, p, h) in hi {
            let entry = topics
                .entry(t.to_string())
                .or_insert_with(|| serde_json::json!({"partitions": {}}));
            entry["partitions"][p.to_string()] =
                serde_json::json!({"partition": p, "hi_offset": h});
        }
        // librdkafka also reports the internal partition -1 with hi_offset -1001.
        serde_json::to_vec(&serde_json::json!({"topics": topics})).unwrap()
    }

    #[test]
    fn lag_is_the_high_watermark_minus_the_stored_offset() {
        let positions: Arc<Mutex<Positions>> = Arc::default();
        {
            let mut p = positions.lock().unwrap();
            p.insert(("a".into(), 0), Some(40));
            p.insert(("a".into(), 1), None);
            p.insert(("b".into(), 3), Some(7));
        }
        let marks = Arc::new(Watermarks::default());
        marks.update(&stats_json(&[("a", 0, 100), ("a", 1, 5), ("a", -1, -1001)]));
        let m = Monitor {
            positions,
            marks,
            control: Arc::default(),
            stats: Arc::default(),
            running: Arc::new(AtomicBool::new(true)),
        };
        let got: Vec<(String, i32, Option<i64>, Option<i64>)> = m
            .partitions()
            .into_iter()
            .map(|p| (p.topic, p.partition, p.high_watermark, p.lag))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), 0, Some(100), Some(60)),
                ("a".into(), 1, Some(5), Some(5)),
                ("b".into(), 3, None, None),
            ]
        );
        assert!(m.running() && !m.paused());
    }
}
