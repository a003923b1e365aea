//! The seeded social workload shared by `tidings demo` and `tidings bench`: a follow graph with
//! power-law follower counts and one celebrity, and a realistic stream of actions on it.
//!
//! Follower counts: every user follows 10–50 others, chosen with probability falling as a power
//! of their id (low ids are popular: most users end up with tens of followers, a few with
//! thousands, growing with `users`); on top, the celebrity (user 0) is followed by
//! `celebrity_share` of everyone.
//!
//! The action mix (per activity drawn): 44% posts, 30% likes of a recent post (notifying its
//! author), 20% comments mentioning the post's author and someone else, 4% follows, 1%
//! unfollows, 1% retractions of an earlier post by its author. Actors are uniform, except that
//! the celebrity writes 1% of posts.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tidings_core::{Activity, Event, EventId, GraphChange, GraphOp, Producer, Retraction, UserId};

/// The celebrity's user id.
pub const CELEBRITY: UserId = 0;

/// An event id for `time_ms` with random low bits (UUIDv7 layout, as producers assign).
pub fn event_id(rng: &mut SmallRng, time_ms: i64) -> EventId {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&time_ms.to_be_bytes()[2..]);
    rng.fill(&mut b[6..]);
    b[6] = (b[6] & 0x0f) | 0x70; // version 7
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    EventId::from_bytes(b)
}

/// A post by `actor` at `time_ms`; its object is `post:<id>`.
pub fn post(
    id: EventId,
    actor: UserId,
    time_ms: i64,
    text: impl Into<String>,
    producer: &Producer,
) -> Activity {
    Activity {
        id,
        actor,
        verb: "post".into(),
        object: format!("post:{id}"),
        target: None,
        time_ms,
        to: vec![],
        text: text.into(),
        attributes: Default::default(),
        producer: producer.clone(),
    }
}

/// Publishes every event concurrently and waits for all acknowledgements; returns how many
/// were not acknowledged.
pub async fn publish_all(producer: &tidings_producers::Producer, events: Vec<Event>) -> u64 {
    let mut tasks = tokio::task::JoinSet::new();
    for e in events {
        let p = producer.clone();
        tasks.spawn(async move { p.publish(e).await.is_err() });
    }
    let mut failed = 0u64;
    while let Some(r) = tasks.join_next().await {
        failed += u64::from(r.unwrap_or(true));
    }
    failed
}

/// Sleeps until the `i`-th event offered at `rate` per second from `start` is due, and returns
/// its offset from `start` (the event's intended send time). A `rate` of 0 means unpaced.
pub async fn until_due(start: Instant, i: u64, rate: f64) -> Duration {
    if rate <= 0.0 {
        return Duration::ZERO;
    }
    let offset = Duration::from_secs_f64(i as f64 / rate);
    let due = start + offset;
    if due > Instant::now() + Duration::from_millis(1) {
        tokio::time::sleep_until(due.into()).await;
    }
    offset
}

/// A user drawn with probability falling as a power of their id: low ids are popular.
fn popular(rng: &mut SmallRng, users: i64) -> UserId {
    let x: f64 = rng.random();
    ((users as f64).powf(x * x * x) as i64).clamp(1, users - 1)
}

/// The follow edges `(follower, followee)` of a graph of `users`, without duplicates.
pub fn graph(users: i64, celebrity_share: f64, seed: u64) -> Vec<(UserId, UserId)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut edges = Vec::new();
    let mut mine = std::collections::HashSet::new();
    for u in 0..users {
        mine.clear();
        if u != CELEBRITY && rng.random_bool(celebrity_share) {
            mine.insert(CELEBRITY);
        }
        let n = rng.random_range(10..=50).min(users as usize - 2);
        while mine.len() < n {
            let f = popular(&mut rng, users);
            if f != u {
                mine.insert(f);
            }
        }
        let mut sorted: Vec<UserId> = mine.iter().copied().collect();
        sorted.sort_unstable();
        edges.extend(sorted.into_iter().map(|f| (u, f)));
    }
    edges
}

/// Followers per user of `edges` (index = user id).
pub fn follower_counts(users: i64, edges: &[(UserId, UserId)]) -> Vec<u64> {
    let mut n = vec![0u64; users as usize];
    for (_, f) in edges {
        n[*f as usize] += 1;
    }
    n
}

/// A follow (or unfollow) event.
pub fn follow(
    rng: &mut SmallRng,
    actor: UserId,
    subject: UserId,
    op: GraphOp,
    time_ms: i64,
    producer: &Producer,
) -> Event {
    Event::Graph(GraphChange {
        id: event_id(rng, time_ms),
        actor,
        subject,
        op,
        time_ms,
        producer: producer.clone(),
    })
}

/// Draws actions one at a time.
#[derive(Debug)]
pub struct Actions {
    rng: SmallRng,
    users: i64,
    producer: Producer,
    /// Recent posts (id, author), newest last.
    posts: Vec<(EventId, UserId)>,
    /// Counts by kind, for reports.
    pub counts: std::collections::BTreeMap<&'static str, u64>,
}

impl Actions {
    /// A stream over `users` users.
    pub fn new(users: i64, seed: u64, producer: Producer) -> Self {
        Actions {
            rng: SmallRng::seed_from_u64(seed ^ 0x05ee_dac7_10a5),
            users,
            producer,
            posts: Vec::new(),
            counts: Default::default(),
        }
    }

    fn recent_post(&mut self) -> (EventId, UserId) {
        let n = self.posts.len();
        self.posts[n - 1 - self.rng.random_range(0..n.min(200))]
    }

    /// The next action, stamped `time_ms`.
    pub fn next(&mut self, time_ms: i64) -> Event {
        let roll: f64 = self.rng.random();
        let id = event_id(&mut self.rng, time_ms);
        let actor = self.rng.random_range(1..self.users);
        let mut act = post(id, actor, time_ms, "", &self.producer);
        let kind = if roll < 0.44 || self.posts.is_empty() {
            if self.rng.random_bool(0.01) {
                act.actor = CELEBRITY;
            }
            act.text = format!(
                "post {} by user {}: {}",
                self.posts.len(),
                act.actor,
                LOREM[self.rng.random_range(0..LOREM.len())]
            );
            self.posts.push((id, act.actor));
            "post"
        } else if roll < 0.74 {
            let (pid, author) = self.recent_post();
            act.verb = "like".into();
            act.object = format!("post:{pid}");
            act.to = vec![author];
            "like"
        } else if roll < 0.94 {
            let (pid, author) = self.recent_post();
            let other = self.rng.random_range(0..self.users);
            act.verb = "comment".into();
            act.object = format!("comment:{id}");
            act.target = Some(format!("post:{pid}"));
            act.to = vec![author, other];
            act.text = format!("@user{other} have you seen this?");
            "comment"
        } else if roll < 0.99 {
            let subject = popular(&mut self.rng, self.users);
            let op = if roll < 0.98 {
                GraphOp::Follow
            } else {
                GraphOp::Unfollow
            };
            let e = follow(&mut self.rng, actor, subject, op, time_ms, &self.producer);
            *self
                .counts
                .entry(if op == GraphOp::Follow {
                    "follow"
                } else {
                    "unfollow"
                })
                .or_default() += 1;
            return e;
        } else {
            let (pid, author) = self.posts[self.rng.random_range(0..self.posts.len())];
            *self.counts.entry("retraction").or_default() += 1;
            return Event::Retraction(Retraction {
                id,
                activity_id: pid,
                actor: author,
                time_ms,
                producer: self.producer.clone(),
            });
        };
        *self.counts.entry(kind).or_default() += 1;
        Event::Activity(act)
    }
}

const LOREM: [&str; 6] = [
    "first light over the harbour this morning",
    "the new release is out, notes inside",
    "reading list for the weekend",
    "three photos from the trail",
    "benchmarks are in and they are not what we expected",
    "coffee, then code review",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graph_is_seeded_power_law_with_one_celebrity() {
        let users = 3_000;
        let edges = graph(users, 0.5, 9);
        assert_eq!(edges, graph(users, 0.5, 9), "same seed, same graph");
        let mut dedup = edges.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), edges.len(), "no duplicate follows");
        assert!(edges.iter().all(|(a, b)| a != b), "nobody follows themself");
        let mut counts = follower_counts(users, &edges);
        let celebrity = counts[CELEBRITY as usize];
        assert!(
            celebrity > users as u64 * 4 / 10,
            "celebrity has {celebrity}"
        );
        counts.sort_unstable();
        let median = counts[counts.len() / 2];
        let top = counts[counts.len() - 2]; // the most followed after the celebrity
        assert!((1..100).contains(&median), "median {median}");
        assert!(top > 20 * median.max(1), "top {top} vs median {median}");
    }

    #[test]
    fn actions_follow_the_mix_and_reference_earlier_posts() {
        let mut a = Actions::new(500, 3, Producer::new("t", "1"));
        let mut posts = std::collections::HashSet::new();
        for i in 0..10_000 {
            match a.next(1_000 + i) {
                Event::Activity(act) if act.verb == "post" => {
                    posts.insert(act.id);
                }
                Event::Activity(act) if act.verb == "like" => {
                    let id: uuid::Uuid = act.object["post:".len()..].parse().expect("post id");
                    assert!(posts.contains(&EventId(id)), "likes an earlier post");
                }
                Event::Retraction(r) => assert!(posts.contains(&r.activity_id)),
                _ => {}
            }
        }
        let share = |k| a.counts.get(k).copied().unwrap_or(0) as f64 / 10_000.0;
        assert!((0.40..0.48).contains(&share("post")), "{:?}", a.counts);
        assert!((0.26..0.34).contains(&share("like")), "{:?}", a.counts);
        assert!((0.17..0.23).contains(&share("comment")), "{:?}", a.counts);
        assert!(share("retraction") > 0.0 && share("unfollow") > 0.0);
    }
}
