//! The feeds expected from a list of actions, computed the plain way (no store, no fan-out),
//! and a seeded scenario exercising every kind of action.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::{Rng, SeedableRng};
use tidings_core::event::{Activity, Event, GraphChange, GraphOp, Producer as Who, Retraction};
use tidings_core::keys::feed::FeedKind;
use tidings_core::{EventId, UserId};

pub const BASE_MS: i64 = 1_767_225_600_000;

/// Final state of a list of actions. Valid while no author has more than the consumers'
/// backfill (100) activities before a follow and nobody re-follows (then a home feed holds every
/// activity of a followed actor).
#[derive(Default, Debug)]
pub struct Model {
    pub activities: HashMap<EventId, Activity>,
    pub retracted: BTreeSet<EventId>,
    pub follows: BTreeSet<(UserId, UserId)>,
    pub blocks: BTreeSet<(UserId, UserId)>,
    pub mutes: BTreeSet<(UserId, UserId)>,
}

impl Model {
    pub fn apply(&mut self, e: &Event) {
        match e {
            Event::Activity(a) => {
                self.activities.insert(a.id, a.clone());
            }
            Event::Retraction(r) => {
                self.retracted.insert(r.activity_id);
            }
            Event::Update(u) => {
                if let Some(a) = self.activities.get_mut(&u.activity_id) {
                    if let Some(t) = &u.text {
                        a.text = t.clone();
                    }
                }
            }
            Event::Graph(g) => {
                let pair = (g.actor, g.subject);
                match g.op {
                    GraphOp::Follow => self.follows.insert(pair),
                    GraphOp::Unfollow => self.follows.remove(&pair),
                    GraphOp::Block => self.blocks.insert(pair),
                    GraphOp::Unblock => self.blocks.remove(&pair),
                    GraphOp::Mute => self.mutes.insert(pair),
                    GraphOp::Unmute => self.mutes.remove(&pair),
                };
            }
        }
    }

    /// Ids of `user`'s `kind` feed, newest first.
    pub fn feed(&self, user: UserId, kind: FeedKind) -> Vec<EventId> {
        let mut items: Vec<&Activity> = self
            .activities
            .values()
            .filter(|a| !self.retracted.contains(&a.id))
            .filter(|a| {
                let own = a.actor == user;
                let blocked = self.blocks.contains(&(user, a.actor));
                let muted = self.mutes.contains(&(user, a.actor));
                match kind {
                    FeedKind::User => own,
                    FeedKind::Home => {
                        own || (self.follows.contains(&(user, a.actor)) && !blocked && !muted)
                    }
                    FeedKind::Notifications => !own && a.to.contains(&user) && !blocked && !muted,
                }
            })
            .collect();
        items.sort_by_key(|a| std::cmp::Reverse((a.time_ms, a.id)));
        items.into_iter().map(|a| a.id).collect()
    }
}

pub fn id(n: u64) -> EventId {
    EventId(uuid::Uuid::from_u128(
        0x0190_0000_0000_7000_8000_0000_0000_0000 | n as u128,
    ))
}

pub fn who() -> Who {
    Who::new("scenario", "1")
}

/// A graph change by `actor` on `subject` with the given id and time.
pub fn graph_change(
    op: GraphOp,
    actor: UserId,
    subject: UserId,
    (id, time_ms): (EventId, i64),
) -> Event {
    Event::Graph(GraphChange {
        id,
        actor,
        subject,
        op,
        time_ms,
        producer: who(),
    })
}

/// A seeded scenario: `users` ordinary users, one author (`celebrity`) followed by more than
/// `threshold` of them, follows, posts with mentions, likes notifying the liked post's owner,
/// retractions, unfollows, blocks and mutes. Events carry fixed ids and increasing times.
pub fn scenario(seed: u64, users: i64, celebrity: UserId) -> Vec<Event> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut n = 0u64;
    let mut next = || {
        n += 1;
        (id(n), BASE_MS + n as i64 * 1_000)
    };
    let mut out = Vec::new();
    let graph = graph_change;
    let mut follows = BTreeSet::new();
    // The celebrity posts twice before anyone follows (backfill / pull of older items).
    let mut posts: Vec<(EventId, UserId, String)> = Vec::new();
    let mut post = |out: &mut Vec<Event>, actor: UserId, to: Vec<UserId>, k: (EventId, i64)| {
        let object = format!("post:{}", k.0 .0.as_u128() & 0xffff);
        posts.push((k.0, actor, object.clone()));
        out.push(Event::Activity(Activity {
            id: k.0,
            actor,
            verb: "post".into(),
            object,
            target: None,
            time_ms: k.1,
            to,
            text: format!("post by {actor}"),
            attributes: BTreeMap::new(),
            producer: who(),
        }));
    };
    post(&mut out, celebrity, vec![], next());
    post(&mut out, celebrity, vec![1], next());
    for u in 1..=users {
        // Everyone follows the celebrity; each follows 3 others.
        out.push(graph(GraphOp::Follow, u, celebrity, next()));
        follows.insert((u, celebrity));
        for _ in 0..3 {
            let v = rng.random_range(1..=users);
            if v != u && follows.insert((u, v)) {
                out.push(graph(GraphOp::Follow, u, v, next()));
            }
        }
    }
    for round in 0..3 {
        for u in 1..=users {
            let to = if rng.random_bool(0.3) {
                vec![rng.random_range(1..=users)]
            } else {
                vec![]
            };
            post(&mut out, u, to, next());
        }
        post(&mut out, celebrity, vec![(round % users) + 1], next());
    }
    // Likes: notify the liked post's owner.
    let snapshot = posts.clone();
    for _ in 0..(users * 2) {
        let (_, owner, object) = &snapshot[rng.random_range(0..snapshot.len())];
        let liker = rng.random_range(1..=users);
        let k = next();
        out.push(Event::Activity(Activity {
            id: k.0,
            actor: liker,
            verb: "like".into(),
            object: object.clone(),
            target: None,
            time_ms: k.1,
            to: vec![*owner],
            text: String::new(),
            attributes: BTreeMap::new(),
            producer: who(),
        }));
    }
    // Three retractions by their authors.
    for (pid, actor, _) in snapshot.iter().step_by(7).take(3) {
        let k = next();
        out.push(Event::Retraction(Retraction {
            id: k.0,
            activity_id: *pid,
            actor: *actor,
            time_ms: k.1,
            producer: who(),
        }));
    }
    // Unfollows, blocks, mutes.
    let edges: Vec<(UserId, UserId)> = follows
        .iter()
        .copied()
        .filter(|(_, b)| *b != celebrity)
        .collect();
    for (a, b) in edges.iter().step_by(5).take(3) {
        out.push(graph(GraphOp::Unfollow, *a, *b, next()));
    }
    for (a, b) in edges.iter().skip(1).step_by(6).take(2) {
        out.push(graph(GraphOp::Block, *a, *b, next()));
    }
    for (a, b) in edges.iter().skip(2).step_by(7).take(2) {
        out.push(graph(GraphOp::Mute, *a, *b, next()));
    }
    out.push(graph(GraphOp::Mute, 2, celebrity, next()));
    out
}
