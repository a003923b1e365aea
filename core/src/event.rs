//! Events as domain types: what services publish and consumers apply.
//!
//! Four kinds of event travel through tidings:
//!
//! | event | topic | effect |
//! |---|---|---|
//! | [`Activity`] | `tidings.activities` | a user did something (post, like, comment, share…): body stored once, index entries fanned out |
//! | [`Retraction`] | `tidings.activities` | the author withdraws an activity: body and index entries removed |
//! | [`Update`] | `tidings.activities` | the author edits an activity: the body changes, the index does not |
//! | [`GraphChange`] | `tidings.graph` | follow / unfollow / block / unblock / mute / unmute |
//!
//! Every event carries its own [`EventId`] (a UUIDv7 assigned by the producer): it is the
//! idempotency key downstream, and every store key an event writes is derived from it. Every
//! event is keyed in Kafka by its acting user ([`Event::actor`]), so one user's actions stay in
//! order. The wire format lives in `tidings-schemas`; this module knows nothing of Avro.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The activity verbs tidings knows by name: each has its own metric label and its own
/// fan-out switch (`fanout.<verb>`, see [`crate::control`]). Other verbs are valid and applied
/// the same way; they share the label `other` and cannot be marked down one by one.
pub const KNOWN_VERBS: [&str; 4] = ["post", "like", "comment", "share"];

/// A user id. Valid ids are non-negative; they key Kafka records as decimal ASCII.
pub type UserId = i64;

/// The id of one event, assigned by the producer (UUIDv7: time-ordered, unique).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    /// The all-zero id, the lowest possible; useful as a range bound.
    pub const MIN: EventId = EventId(Uuid::nil());
    /// The all-ones id, the highest possible; useful as a range bound.
    pub const MAX: EventId = EventId(Uuid::max());

    /// The id as 16 big-endian bytes (sorts like the id).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Builds an id from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        EventId(Uuid::from_bytes(bytes))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for EventId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(EventId)
    }
}

/// Which service (and which build of it) published an event. Rollback of a bad deploy
/// filters on this (`--skip producer=svc-x@1.4.2`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Producer {
    /// Service name, e.g. `posts-api`.
    pub name: String,
    /// Service version, e.g. `1.4.2`.
    pub version: String,
}

impl Producer {
    /// Convenience constructor.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Producer {
            name: name.into(),
            version: version.into(),
        }
    }
}

impl fmt::Display for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// A user did something: `actor` `verb`ed `object` (optionally in `target`).
///
/// `object` and `target` are opaque references chosen by the producing service, e.g.
/// `post:0192…` or `photo:77`; tidings groups and filters on them but never parses them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Idempotency key; also the body's key in the message keyspace.
    pub id: EventId,
    /// Who acted; the Kafka key.
    pub actor: UserId,
    /// What they did: `post`, `like`, `comment`, `share`, … (lowercase ASCII word).
    pub verb: String,
    /// What they did it to.
    pub object: String,
    /// Where, if anywhere: the post a comment replies to, the album a photo went into.
    pub target: Option<String>,
    /// When it happened, milliseconds since the Unix epoch (producer's clock).
    pub time_ms: i64,
    /// Explicit recipients (mentions, the owner of a liked post): they get a notification.
    pub to: Vec<UserId>,
    /// Free text (post body, comment); may be empty.
    pub text: String,
    /// Extra attributes, passed through untouched.
    pub attributes: BTreeMap<String, String>,
    /// Who published it.
    pub producer: Producer,
}

/// The author withdraws one of their activities.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retraction {
    /// This event's own id.
    pub id: EventId,
    /// The activity being withdrawn.
    pub activity_id: EventId,
    /// Who asks; must be the activity's actor.
    pub actor: UserId,
    /// When, ms since the epoch.
    pub time_ms: i64,
    /// Who published it.
    pub producer: Producer,
}

/// The author edits one of their activities: the body changes, index entries stay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// This event's own id.
    pub id: EventId,
    /// The activity being edited.
    pub activity_id: EventId,
    /// Who asks; must be the activity's actor.
    pub actor: UserId,
    /// When, ms since the epoch.
    pub time_ms: i64,
    /// New text, if it changes.
    pub text: Option<String>,
    /// Attributes to set (merged over the old ones).
    pub attributes: BTreeMap<String, String>,
    /// Who published it.
    pub producer: Producer,
}

/// What a [`GraphChange`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphOp {
    /// `actor` starts following `subject`.
    Follow,
    /// `actor` stops following `subject`.
    Unfollow,
    /// `actor` blocks `subject`: nothing of `subject` reaches `actor`.
    Block,
    /// Undo a block.
    Unblock,
    /// `actor` mutes `subject`: hidden from `actor`'s home feed, still followed.
    Mute,
    /// Undo a mute.
    Unmute,
}

impl GraphOp {
    /// Every op, in wire order (the Avro enum's symbol order).
    pub const ALL: [GraphOp; 6] = [
        GraphOp::Follow,
        GraphOp::Unfollow,
        GraphOp::Block,
        GraphOp::Unblock,
        GraphOp::Mute,
        GraphOp::Unmute,
    ];

    /// The lowercase name used on the wire and in the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            GraphOp::Follow => "follow",
            GraphOp::Unfollow => "unfollow",
            GraphOp::Block => "block",
            GraphOp::Unblock => "unblock",
            GraphOp::Mute => "mute",
            GraphOp::Unmute => "unmute",
        }
    }

    /// Parses [`GraphOp::as_str`] back.
    pub fn parse(s: &str) -> Option<GraphOp> {
        GraphOp::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

impl fmt::Display for GraphOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change to the social graph, published on `tidings.graph` keyed by `actor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphChange {
    /// This event's own id.
    pub id: EventId,
    /// Who follows / blocks / mutes.
    pub actor: UserId,
    /// Whom.
    pub subject: UserId,
    /// What happens to the edge.
    pub op: GraphOp,
    /// When, ms since the epoch.
    pub time_ms: i64,
    /// Who published it.
    pub producer: Producer,
}

/// Any event tidings consumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// See [`Activity`].
    Activity(Activity),
    /// See [`Retraction`].
    Retraction(Retraction),
    /// See [`Update`].
    Update(Update),
    /// See [`GraphChange`].
    Graph(GraphChange),
}

impl Event {
    /// The event's own id.
    pub fn id(&self) -> EventId {
        match self {
            Event::Activity(a) => a.id,
            Event::Retraction(r) => r.id,
            Event::Update(u) => u.id,
            Event::Graph(g) => g.id,
        }
    }

    /// The acting user: the Kafka key and the partitioning unit.
    pub fn actor(&self) -> UserId {
        match self {
            Event::Activity(a) => a.actor,
            Event::Retraction(r) => r.actor,
            Event::Update(u) => u.actor,
            Event::Graph(g) => g.actor,
        }
    }

    /// When it happened, ms since the epoch.
    pub fn time_ms(&self) -> i64 {
        match self {
            Event::Activity(a) => a.time_ms,
            Event::Retraction(r) => r.time_ms,
            Event::Update(u) => u.time_ms,
            Event::Graph(g) => g.time_ms,
        }
    }

    /// Who published it.
    pub fn producer(&self) -> &Producer {
        match self {
            Event::Activity(a) => &a.producer,
            Event::Retraction(r) => &r.producer,
            Event::Update(u) => &u.producer,
            Event::Graph(g) => &g.producer,
        }
    }

    /// A short name of the event's kind or verb, for metrics and filters:
    /// the activity's verb, or `retract`, `update`, or the graph op.
    pub fn verb(&self) -> &str {
        match self {
            Event::Activity(a) => &a.verb,
            Event::Retraction(_) => "retract",
            Event::Update(_) => "update",
            Event::Graph(g) => g.op.as_str(),
        }
    }

    /// [`Event::verb`] bounded for metric labels: a verb of [`KNOWN_VERBS`], `retract`,
    /// `update` or a graph op; any other activity verb is `other`, so a producer inventing
    /// verbs cannot blow up the number of time series.
    pub fn verb_label(&self) -> &'static str {
        match self {
            Event::Activity(a) => KNOWN_VERBS
                .iter()
                .find(|v| **v == a.verb)
                .copied()
                .unwrap_or("other"),
            Event::Retraction(_) => "retract",
            Event::Update(_) => "update",
            Event::Graph(g) => g.op.as_str(),
        }
    }

    /// The Kafka record key of this event: the actor's id as decimal ASCII.
    pub fn kafka_key(&self) -> String {
        self.actor().to_string()
    }
}
