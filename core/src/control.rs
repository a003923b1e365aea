//! Run-time switches an operator flips without a restart: pausing the consumers and marking
//! features down (the seed design's graceful degradation under load).
//!
//! One [`Control`] per process, shared as an `Arc` by the consume loop, the projector, the
//! query routes and the admin API (`/v1/admin/...` in the `tidings` binary), which is the
//! only writer. Reads are single atomic loads, cheap enough for every event and every request.
//!
//! ## Features
//!
//! | feature | who honours it | while it is down |
//! |---|---|---|
//! | `fanout.<verb>` (one per verb of [`KNOWN_VERBS`]) | consumers | a new activity with that verb is applied without pushing it to followers' home feeds (its body, the actor's own feeds and the notifications of its explicit recipients are still written) |
//! | `query.cache_only` | query service | pages are served only from the page cache; a miss is a 503 with `Retry-After` |
//! | `query.sse` | query service | `home:stream` is refused with a 503 |
//!
//! A fan-out decision is taken once per event, when its first batch is planned, and committed
//! with that event's offset: marking a feature up again does not push the events applied while
//! it was down (they stay where they were written), and a fan-out already split over several
//! batches finishes as it started. So every event is still applied exactly once.
//!
//! ## Pause
//!
//! [`Control::request_pause`] records what the operator wants under a new sequence number;
//! the consume loop applies it between batches and [`Control::acknowledge`]s that number, so
//! the admin API can tell "requested" from "done" ([`Control::acknowledged`]).
//!
//! Non-goals: persistence (a restarted process starts with everything up and unpaused, as
//! configured) and coordination between processes (each process has its own switches; an
//! operator flips them on every process of a role).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::event::KNOWN_VERBS;

/// Who honours a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The consumers (`tidings consume`, `tidings up`).
    Consumers,
    /// The query service (`tidings serve`, `tidings up`).
    Query,
}

/// A feature that can be marked down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// Its name in the admin API and the `tidings_feature_down{feature}` metric.
    pub name: &'static str,
    /// Who honours it.
    pub side: Side,
    /// What marking it down does, for people.
    pub effect: &'static str,
}

/// Every feature, in a fixed order.
pub const FEATURES: [Feature; 6] = [
    Feature {
        name: "fanout.post",
        side: Side::Consumers,
        effect: "new `post` activities are not pushed to followers' home feeds",
    },
    Feature {
        name: "fanout.like",
        side: Side::Consumers,
        effect: "new `like` activities are not pushed to followers' home feeds",
    },
    Feature {
        name: "fanout.comment",
        side: Side::Consumers,
        effect: "new `comment` activities are not pushed to followers' home feeds",
    },
    Feature {
        name: "fanout.share",
        side: Side::Consumers,
        effect: "new `share` activities are not pushed to followers' home feeds",
    },
    Feature {
        name: "query.cache_only",
        side: Side::Query,
        effect: "pages are served from the page cache only; a miss is a 503 with Retry-After",
    },
    Feature {
        name: "query.sse",
        side: Side::Query,
        effect: "home:stream (server-sent events) is refused with a 503",
    },
];

const CACHE_ONLY: usize = 4;
const SSE: usize = 5;

/// A feature name that is not in [`FEATURES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no feature {name:?}; known features: {}", known_names().join(", "))]
pub struct UnknownFeature {
    /// The name asked for.
    pub name: String,
}

/// The names of every feature, in [`FEATURES`] order.
pub fn known_names() -> Vec<&'static str> {
    FEATURES.iter().map(|f| f.name).collect()
}

/// The shared switches of one process. `Default`: nothing down, not paused.
#[derive(Debug, Default)]
pub struct Control {
    down: [AtomicBool; FEATURES.len()],
    /// What the operator asked for: `sequence << 1 | paused`.
    requested: AtomicU64,
    /// The last request the consume loop has carried out, same encoding.
    acknowledged: AtomicU64,
}

/// A pause or resume request, to wait for with [`Control::acknowledged`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

impl Control {
    /// The index of a feature by name.
    fn index(name: &str) -> Result<usize, UnknownFeature> {
        FEATURES
            .iter()
            .position(|f| f.name == name)
            .ok_or_else(|| UnknownFeature {
                name: name.to_owned(),
            })
    }

    /// The feature called `name`.
    pub fn feature(name: &str) -> Result<Feature, UnknownFeature> {
        Self::index(name).map(|i| FEATURES[i])
    }

    /// Marks `name` down (`true`) or up; returns whether that changed anything.
    pub fn set_down(&self, name: &str, down: bool) -> Result<bool, UnknownFeature> {
        let i = Self::index(name)?;
        Ok(self.down[i].swap(down, Ordering::SeqCst) != down)
    }

    /// Whether `name` is marked down.
    pub fn is_down(&self, name: &str) -> Result<bool, UnknownFeature> {
        Self::index(name).map(|i| self.down[i].load(Ordering::SeqCst))
    }

    /// The features marked down now, in [`FEATURES`] order.
    pub fn down(&self) -> Vec<&'static str> {
        FEATURES
            .iter()
            .zip(&self.down)
            .filter(|(_, d)| d.load(Ordering::SeqCst))
            .map(|(f, _)| f.name)
            .collect()
    }

    /// Whether activities with `verb` are applied without pushing to followers
    /// (`fanout.<verb>` is down). Verbs outside [`KNOWN_VERBS`] are always pushed.
    pub fn fanout_down(&self, verb: &str) -> bool {
        KNOWN_VERBS
            .iter()
            .position(|v| *v == verb)
            .is_some_and(|i| self.down[i].load(Ordering::Relaxed))
    }

    /// Whether the query service serves cached pages only (`query.cache_only` is down).
    pub fn cache_only(&self) -> bool {
        self.down[CACHE_ONLY].load(Ordering::Relaxed)
    }

    /// Whether `home:stream` is refused (`query.sse` is down).
    pub fn sse_down(&self) -> bool {
        self.down[SSE].load(Ordering::Relaxed)
    }

    /// Asks the consumers to pause (`true`) or resume. Returns the ticket of this request and
    /// whether it changes what was asked before.
    pub fn request_pause(&self, pause: bool) -> (Ticket, bool) {
        let next = |cur: u64| ((cur >> 1) + 1) << 1 | u64::from(pause);
        let prev = self
            .requested
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| Some(next(cur)))
            .unwrap_or_else(|cur| cur);
        (Ticket(next(prev)), (prev & 1 == 1) != pause)
    }

    /// Whether the operator asked the consumers to pause (and has not resumed them since).
    pub fn pause_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst) & 1 == 1
    }

    /// For the consume loop: the request to carry out, and whether it is a pause.
    pub fn pending(&self) -> (Ticket, bool) {
        let r = self.requested.load(Ordering::SeqCst);
        (Ticket(r), r & 1 == 1)
    }

    /// For the consume loop: the request `t` is carried out (partitions paused or resumed,
    /// no batch in flight).
    pub fn acknowledge(&self, t: Ticket) {
        self.acknowledged.fetch_max(t.0, Ordering::SeqCst);
    }

    /// Whether the consume loop has carried out request `t` (or a later one).
    pub fn acknowledged(&self, t: Ticket) -> bool {
        self.acknowledged.load(Ordering::SeqCst) >= t.0
    }

    /// Whether the consume loop is paused now (it carried out a pause and no resume since).
    pub fn consumers_paused(&self) -> bool {
        self.acknowledged.load(Ordering::SeqCst) & 1 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Activity, Event, EventId, GraphChange, GraphOp, Producer};

    #[test]
    fn every_known_verb_has_its_fanout_feature_at_its_index() {
        for (i, v) in KNOWN_VERBS.iter().enumerate() {
            assert_eq!(FEATURES[i].name, format!("fanout.{v}"));
            assert_eq!(FEATURES[i].side, Side::Consumers);
        }
        assert_eq!(FEATURES[CACHE_ONLY].name, "query.cache_only");
        assert_eq!(FEATURES[SSE].name, "query.sse");
    }

    #[test]
    fn marking_down_and_up() {
        let c = Control::default();
        assert!(c.down().is_empty());
        assert_eq!(c.set_down("fanout.like", true), Ok(true));
        assert_eq!(c.set_down("fanout.like", true), Ok(false));
        assert!(c.fanout_down("like"));
        assert!(!c.fanout_down("post"));
        assert!(!c.fanout_down("photo"));
        assert_eq!(c.set_down("query.sse", true), Ok(true));
        assert!(c.sse_down() && !c.cache_only());
        assert_eq!(c.down(), vec!["fanout.like", "query.sse"]);
        assert_eq!(c.set_down("fanout.like", false), Ok(true));
        assert!(!c.fanout_down("like"));
        assert_eq!(c.is_down("query.sse"), Ok(true));
        assert_eq!(c.down(), vec!["query.sse"]);
    }

    #[test]
    fn unknown_features_name_the_known_ones() {
        let c = Control::default();
        let e = c.set_down("fanout.likes", true).unwrap_err();
        assert_eq!(e.name, "fanout.likes");
        assert_eq!(
            e.to_string(),
            "no feature \"fanout.likes\"; known features: fanout.post, fanout.like, \
             fanout.comment, fanout.share, query.cache_only, query.sse"
        );
        assert!(c.down().is_empty());
    }

    #[test]
    fn pause_requests_are_acknowledged_in_order() {
        let c = Control::default();
        assert!(!c.pause_requested() && !c.consumers_paused());
        let (t1, changed) = c.request_pause(true);
        assert!(changed && c.pause_requested());
        assert!(!c.acknowledged(t1) && !c.consumers_paused());
        assert_eq!(c.pending(), (t1, true));
        c.acknowledge(t1);
        assert!(c.acknowledged(t1) && c.consumers_paused());

        let (again, changed) = c.request_pause(true);
        assert!(!changed && again != t1);
        let (t2, changed) = c.request_pause(false);
        assert!(changed && !c.pause_requested());
        // The loop carried out the pause only: still paused, the resume is pending.
        assert!(c.consumers_paused() && !c.acknowledged(t2));
        c.acknowledge(t2);
        assert!(c.acknowledged(again) && c.acknowledged(t2) && !c.consumers_paused());
    }

    #[test]
    fn verb_labels_are_bounded() {
        let producer = Producer::new("t", "1");
        let activity = |verb: &str| {
            Event::Activity(Activity {
                id: EventId::MIN,
                actor: 1,
                verb: verb.into(),
                object: "o".into(),
                target: None,
                time_ms: 1,
                to: vec![],
                text: String::new(),
                attributes: Default::default(),
                producer: producer.clone(),
            })
        };
        assert_eq!(activity("like").verb_label(), "like");
        assert_eq!(activity("post").verb_label(), "post");
        assert_eq!(activity("checkin").verb_label(), "other");
        let g = Event::Graph(GraphChange {
            id: EventId::MIN,
            actor: 1,
            subject: 2,
            op: GraphOp::Unmute,
            time_ms: 1,
            producer,
        });
        assert_eq!(g.verb_label(), "unmute");
    }
}
