//! The stateful processors: `dedupe` and `rate_limit`. Their state lives in the `prc`
//! keyspace ([`crate::keys::procstate`]), written in the same batch as the event's effects;
//! time is the log time, cut into buckets of the processor's window.
//!
//! ```toml
//! [[pipeline.processor]]
//! id = "dedupe"
//! kind = "dedupe"
//! window_ms = 600000        # a re-published event id within 10 minutes of log time is dropped
//!
//! [[pipeline.processor]]
//! id = "flood"
//! kind = "rate_limit"
//! max_events = 30           # per actor …
//! per_ms = 60000            # … per minute of log time (fixed windows)
//! verbs = ["post", "comment"]       # only these count and are limited (default: every event)
//! excess_topic = "tidings.deferred" # excess goes there (deferred) instead of being dropped
//! ```
//!
//! **dedupe** drops (`duplicate`) an event whose id was seen at another log position within
//! `window_ms` of log time, either way (always caught within one window, possibly up to two:
//! buckets are `window_ms` wide and the event's own, the previous and the next are checked).
//! The same record applied again (a restore replaying the log) is recognised as itself.
//! Matches on a duplicate.
//!
//! **rate_limit** admits at most `max_events` events per actor per fixed window of `per_ms`
//! of log time; each admitted event is recorded, so an event replayed after a restore finds
//! itself and is admitted again. Excess events are dropped (`rate_limited`) or, with
//! `excess_topic`, sent there as an `avro` side output and not applied (`rate_limited_deferred`:
//! deferred, not lost; whoever consumes that topic re-publishes them later). Matches on an
//! excess event.
//!
//! Both pass without state while a split fan-out resumes (they admitted the event already).
//! Their state is per source partition, and an event older than the two kept buckets is judged
//! in the older of them (see [`crate::keys::procstate`]).

use foundationdb_tuple::Subspace;
use serde::Deserialize;

use super::config::{check_topic, check_verbs, config_error, EmitConfig, Format};
use super::{Ctx, Decision, Flow, ProcessError, Processor};
use crate::keys::procstate;
use crate::write::Mutation;

/// The drop reason of an event a rate limiter sent to its `excess_topic` to come back later;
/// dedupe records of such an event are voided (its re-publish is not a duplicate).
pub(crate) const DEFERRED: &str = "rate_limited_deferred";

/// `kind = "dedupe"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    /// The processor's id (names its state: changing it starts afresh).
    pub id: String,
    /// Side output for every duplicate.
    pub emit: Option<EmitConfig>,
    /// How long (ms of log time) an event id is remembered; at least one window, at most two.
    pub window_ms: i64,
}

/// `kind = "rate_limit"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The processor's id (names its state).
    pub id: String,
    /// Side output for every excess event (besides `excess_topic`).
    pub emit: Option<EmitConfig>,
    /// Events admitted per actor per window.
    pub max_events: usize,
    /// The window, ms of log time.
    pub per_ms: i64,
    /// Only events with these verbs (activity verbs, `retract`, `update`, graph ops) count and
    /// are limited (default: every event).
    pub verbs: Option<Vec<String>>,
    /// Send excess events here (their record, Avro) instead of dropping them.
    pub excess_topic: Option<String>,
}

/// A scope's bucket cursor as stored: (kind, bucket size in ms, newest bucket).
type Cursor = Option<(String, i64, i64)>;

/// Where the event in a [`Ctx`] falls among its scope's buckets, from the scope's cursor read
/// once per event (nothing writes it before [`Place::advance`]).
struct Place {
    /// The state scope: this processor, the event's source partition.
    scope: Subspace,
    /// The cursor as read.
    cursor: Cursor,
    /// The processor kind and bucket size the cursor is written under.
    kind: &'static str,
    bucket_ms: i64,
    /// The bucket the event is judged in: its own, or for an event older than the two kept
    /// buckets the older of them (late events count; nothing is written below).
    bucket: i64,
}

impl Place {
    fn of(cx: &Ctx<'_>, kind: &'static str, bucket_ms: i64) -> Result<Place, ProcessError> {
        let scope = procstate::scope(cx.p, cx.id, &cx.origin.topic, cx.origin.partition);
        let cursor = cx
            .state
            .get(&procstate::cursor(&scope))?
            .and_then(|v| procstate::decode_cursor(&v));
        // The newest bucket, if the cursor was written under this kind and bucket size.
        let newest = cursor
            .as_ref()
            .filter(|(k, ms, _)| k == kind && *ms == bucket_ms)
            .map(|(_, _, b)| *b);
        let own = cx.log_time_ms.div_euclid(bucket_ms);
        let bucket = match newest {
            Some(b) => own.max(b - 1),
            None => own,
        };
        Ok(Place {
            scope,
            cursor,
            kind,
            bucket_ms,
            bucket,
        })
    }

    /// Moves the scope's bucket cursor to the event's bucket if it is newer, clearing buckets
    /// older than `bucket - 1` once per change (or the whole scope if the cursor was written
    /// under other settings).
    fn advance(self, cx: &mut Ctx<'_>) {
        let (s, bucket) = (&self.scope, self.bucket);
        let set = Mutation::Set {
            key: procstate::cursor(s),
            value: procstate::encode_cursor(self.kind, self.bucket_ms, bucket),
        };
        match self.cursor {
            Some((k, ms, b)) if k == self.kind && ms == self.bucket_ms => {
                if bucket > b {
                    cx.mutations.push(procstate::clear_before(s, bucket - 1));
                    cx.mutations.push(set);
                }
            }
            Some(_) => {
                cx.mutations.push(procstate::clear_all(s));
                cx.mutations.push(set);
            }
            None => cx.mutations.push(set),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Dedupe {
    window_ms: i64,
}

impl Dedupe {
    pub(crate) fn new(c: &DedupeConfig) -> Result<Self, ProcessError> {
        if c.window_ms <= 0 {
            return Err(config_error(&c.id, "window_ms must be positive"));
        }
        Ok(Dedupe {
            window_ms: c.window_ms,
        })
    }
}

impl Processor for Dedupe {
    fn process(&self, cx: &mut Ctx<'_>) -> Result<Decision, ProcessError> {
        if cx.resuming {
            return Ok(Decision::next());
        }
        let place = Place::of(cx, "dedupe", self.window_ms)?;
        let (s, bucket) = (&place.scope, place.bucket);
        let id = cx.event.id();
        let o = cx.origin;
        let origin = procstate::encode_origin(&o.topic, o.partition, o.offset);
        // The next bucket too: a copy published with an earlier log time than the first.
        for b in [bucket, bucket - 1, bucket + 1] {
            if let Some(first) = cx.state.get(&procstate::seen(s, b, id))? {
                if first == origin {
                    // This very record again (a replay): it was admitted.
                    return Ok(Decision::next());
                }
                return Ok(Decision::matched(
                    Flow::Drop {
                        reason: "duplicate".into(),
                    },
                    format!("event {id} was seen within the last {} ms", self.window_ms),
                ));
            }
        }
        let seen = procstate::seen(s, bucket, id);
        place.advance(cx);
        cx.unless_deferred.push(Mutation::Set {
            key: seen,
            value: origin,
        });
        Ok(Decision::next())
    }
}

#[derive(Debug)]
pub(crate) struct RateLimit(RateLimitConfig);

impl RateLimit {
    pub(crate) fn new(c: &RateLimitConfig) -> Result<Self, ProcessError> {
        if c.per_ms <= 0 {
            return Err(config_error(&c.id, "per_ms must be positive"));
        }
        if c.max_events == 0 {
            return Err(config_error(
                &c.id,
                "max_events must be at least 1 (to stop every event, use a rule with then = \"drop\")",
            ));
        }
        if let Some(v) = &c.verbs {
            for verb in v {
                // Graph ops and `retract`/`update` are verbs here too.
                if crate::event::GraphOp::parse(verb).is_none()
                    && verb != "retract"
                    && verb != "update"
                {
                    check_verbs(&c.id, "verbs", std::slice::from_ref(verb))?;
                }
            }
        }
        if let Some(t) = &c.excess_topic {
            check_topic(&c.id, "excess_topic", t)?;
        }
        Ok(RateLimit(c.clone()))
    }
}

impl Processor for RateLimit {
    fn process(&self, cx: &mut Ctx<'_>) -> Result<Decision, ProcessError> {
        let c = &self.0;
        if cx.resuming
            || c.verbs
                .as_ref()
                .is_some_and(|v| !v.iter().any(|x| x == cx.event.verb()))
        {
            return Ok(Decision::next());
        }
        let place = Place::of(cx, "rate_limit", c.per_ms)?;
        let (actor, id) = (cx.event.actor(), cx.event.id());
        let mine = procstate::admitted(&place.scope, place.bucket, actor, id);
        if cx.state.get(&mine)?.is_some() {
            // Admitted before (a replay): admitted again, not counted twice.
            return Ok(Decision::next());
        }
        let (b, e) = procstate::admitted_range(&place.scope, place.bucket, actor);
        let admitted = cx.state.count(&b, &e, c.max_events)?;
        if admitted < c.max_events {
            place.advance(cx);
            cx.mutations.push(Mutation::Set {
                key: mine,
                value: Vec::new(),
            });
            return Ok(Decision::next());
        }
        let note = format!(
            "user {actor} is over {} events per {} ms",
            c.max_events, c.per_ms
        );
        let reason = match &c.excess_topic {
            Some(t) => {
                cx.emit(t, Format::Avro, note.clone());
                DEFERRED
            }
            None => "rate_limited",
        };
        Ok(Decision::matched(
            Flow::Drop {
                reason: reason.into(),
            },
            note,
        ))
    }

    fn topics(&self) -> Vec<String> {
        self.0.excess_topic.iter().cloned().collect()
    }
}
