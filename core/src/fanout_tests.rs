#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use super::*;
use crate::event::Producer;
use crate::keys::feed::parse_key;
use crate::write::decode_i64;

/// Followers by followee, for planning tests.
#[derive(Default)]
struct Graph(BTreeMap<UserId, BTreeSet<UserId>>);

impl GraphView for Graph {
    type Error = Infallible;
    fn follower_count(&self, user: UserId) -> Result<u64, Infallible> {
        Ok(self.0.get(&user).map_or(0, |s| s.len() as u64))
    }
    fn followers_after(
        &self,
        user: UserId,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, Infallible> {
        let Some(set) = self.0.get(&user) else {
            return Ok(vec![]);
        };
        Ok(set
            .iter()
            .copied()
            .filter(|f| after.is_none_or(|a| *f > a))
            .take(limit)
            .collect())
    }
    fn excluded(
        &self,
        _actor: UserId,
        users: &[UserId],
        _blocks: bool,
        _mutes: bool,
    ) -> Result<Vec<bool>, Infallible> {
        Ok(vec![false; users.len()])
    }
}

/// Every write of a plan.
fn writes(plan: &Plan) -> Vec<Mutation> {
    plan.clone().writes().collect()
}

/// Applies mutations with FoundationDB semantics to a sorted map.
fn apply(kv: &mut BTreeMap<Vec<u8>, Vec<u8>>, ms: &[Mutation]) {
    for m in ms {
        match m {
            Mutation::Set { key, value } => {
                kv.insert(key.clone(), value.clone());
            }
            Mutation::Clear { key } => {
                kv.remove(key);
            }
            Mutation::ClearRange { begin, end } => {
                let doomed: Vec<_> = kv
                    .range(begin.clone()..end.clone())
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    kv.remove(&k);
                }
            }
            Mutation::Add { key, delta } => {
                let old = kv.get(key).map_or(0, |v| decode_i64(v));
                kv.insert(key.clone(), old.wrapping_add(*delta).to_le_bytes().to_vec());
            }
        }
    }
}

fn activity(actor: UserId, to: Vec<UserId>) -> Activity {
    Activity {
        id: EventId::from_bytes([9; 16]),
        actor,
        verb: "post".into(),
        object: "post:9".into(),
        target: None,
        time_ms: 1_000,
        to,
        text: "hi".into(),
        attributes: Default::default(),
        producer: Producer::new("t", "1"),
    }
}

fn graph_with(author: UserId, followers: impl IntoIterator<Item = UserId>) -> Graph {
    let mut g = Graph::default();
    g.0.insert(author, followers.into_iter().collect());
    g
}

fn feed_owners(
    kv: &BTreeMap<Vec<u8>, Vec<u8>>,
    kind: FeedKind,
    candidates: impl IntoIterator<Item = UserId>,
) -> Vec<UserId> {
    candidates
        .into_iter()
        .filter(|u| {
            let sub = feed::feed(1, *u, kind);
            let (b, e) = sub.range();
            kv.range(b..e).any(|(k, _)| parse_key(&sub, k).is_some())
        })
        .collect()
}

/// Runs a plan to completion the way a consumer does, step by step.
fn run_activity(
    kv: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    a: &Activity,
    g: &Graph,
    cfg: &FanoutConfig,
) -> usize {
    let mut resume = None;
    let mut steps = 0;
    loop {
        let plan = plan_activity(
            1,
            a,
            b"body".to_vec(),
            g,
            cfg,
            &FanoutOptions::default(),
            resume,
        )
        .unwrap();
        apply(kv, &writes(&plan));
        steps += 1;
        match plan.resume {
            Some(r) => {
                let cursor = kv
                    .get(&fanout::key(1, a.id))
                    .map(|v| fanout::Cursor::decode(v));
                let owner = Some(fanout::Owner::Fanout(a.actor));
                assert_eq!(cursor, Some(Some(fanout::Cursor { last: r, owner })));
                resume = Some(r);
            }
            None => return steps,
        }
    }
}

#[test]
fn activity_reaches_followers_recipients_and_author() {
    let g = graph_with(1, [2, 3, 4]);
    let a = activity(1, vec![5, 1, 5]);
    let plan = plan_activity(
        1,
        &a,
        b"body".to_vec(),
        &g,
        &FanoutConfig::default(),
        &FanoutOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(plan.resume, None);
    // user + own home + notification for 5 (the actor and the duplicate are skipped) + 3 followers.
    assert_eq!(plan.entries, 6);
    let mut kv = BTreeMap::new();
    apply(&mut kv, &writes(&plan));
    assert_eq!(kv.get(&messages::key(1, a.id)).unwrap(), b"body");
    assert_eq!(feed_owners(&kv, FeedKind::Home, 0..10), vec![1, 2, 3, 4]);
    assert_eq!(feed_owners(&kv, FeedKind::User, 0..10), vec![1]);
    assert_eq!(feed_owners(&kv, FeedKind::Notifications, 0..10), vec![5]);
    let v = kv
        .get(&feed::key(
            1,
            2,
            FeedKind::Home,
            Position {
                time_ms: 1_000,
                id: a.id,
            },
        ))
        .unwrap();
    let e = FeedEntry::decode(v).unwrap();
    assert_eq!(
        (e.actor, e.verb.as_str(), e.reason),
        (1, "post", Reason::Follow)
    );
    assert_eq!(
        decode_i64(kv.get(&fver::key(1, 5, FeedKind::Notifications)).unwrap()),
        1
    );
}

/// What a fan-out marked down plans (`fanout.<verb>`, see [`crate::control`]): the followers
/// target off, in one step.
#[test]
fn an_unpushed_activity_writes_everything_but_the_followers_entries() {
    let g = graph_with(1, [2, 3, 4]);
    let a = activity(1, vec![5, 1]);
    let cfg = FanoutConfig::default();
    let opts = FanoutOptions::default();
    let unpushed = FanoutOptions {
        targets: Targets {
            followers: false,
            ..opts.targets
        },
        ..opts
    };
    let plan = plan_activity(1, &a, b"body".to_vec(), &g, &cfg, &unpushed, None).unwrap();
    assert_eq!((plan.entries, plan.resume), (3, None));
    let mut kv = BTreeMap::new();
    apply(&mut kv, &writes(&plan));
    assert_eq!(kv.get(&messages::key(1, a.id)).unwrap(), b"body");
    assert_eq!(feed_owners(&kv, FeedKind::Home, 0..10), vec![1]);
    assert_eq!(feed_owners(&kv, FeedKind::User, 0..10), vec![1]);
    assert_eq!(feed_owners(&kv, FeedKind::Notifications, 0..10), vec![5]);
    // Exactly the pushed plan's writes minus the followers' entries and feed versions.
    let pushed = writes(&plan_activity(1, &a, b"body".to_vec(), &g, &cfg, &opts, None).unwrap());
    let pos = Position {
        time_ms: a.time_ms,
        id: a.id,
    };
    let followers: Vec<Vec<u8>> = [2, 3, 4]
        .into_iter()
        .flat_map(|f| {
            [
                feed::key(1, f, FeedKind::Home, pos),
                fver::key(1, f, FeedKind::Home),
            ]
        })
        .collect();
    let expected: Vec<&Mutation> = pushed
        .iter()
        .filter(|m| {
            !matches!(m, Mutation::Set { key, .. } | Mutation::Add { key, .. }
                if followers.contains(key))
        })
        .collect();
    assert_eq!(expected.len(), pushed.len() - 6);
    assert_eq!(writes(&plan).iter().collect::<Vec<_>>(), expected);
    // A retraction removes what it wrote.
    let r = Retraction {
        id: EventId::from_bytes([1; 16]),
        activity_id: a.id,
        actor: 1,
        time_ms: 2_000,
        producer: Producer::new("t", "1"),
    };
    let undo = plan_retraction(1, &r, &Placement::from(&a), &g, &cfg, None).unwrap();
    apply(&mut kv, &writes(&undo));
    let (b, e) = crate::keys::keyspace_range(1, "feed");
    assert_eq!(kv.range(b..e).count(), 0, "no index entry left");
}

#[test]
fn authors_above_the_threshold_are_not_pushed() {
    let g = graph_with(1, 2..=11);
    let cfg = FanoutConfig {
        hybrid_threshold: 9,
        ..FanoutConfig::default()
    };
    let plan = plan_activity(
        1,
        &activity(1, vec![]),
        vec![],
        &g,
        &cfg,
        &FanoutOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(
        plan.entries, 2,
        "only the author's own user and home entries"
    );
    let cfg = FanoutConfig {
        hybrid_threshold: 10,
        ..FanoutConfig::default()
    };
    let plan = plan_activity(
        1,
        &activity(1, vec![]),
        vec![],
        &g,
        &cfg,
        &FanoutOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(plan.entries, 12, "at the threshold, still pushed");
}

#[test]
fn split_fanout_equals_one_big_step() {
    let g = graph_with(1, 2..=13);
    let a = activity(1, vec![20]);
    let mut whole = BTreeMap::new();
    assert_eq!(
        run_activity(
            &mut whole,
            &a,
            &g,
            &FanoutConfig {
                max_entries_per_step: 100,
                ..Default::default()
            }
        ),
        1
    );
    let mut split = BTreeMap::new();
    let steps = run_activity(
        &mut split,
        &a,
        &g,
        &FanoutConfig {
            max_entries_per_step: 5,
            ..Default::default()
        },
    );
    assert_eq!(steps, 3, "12 followers in steps of 5");
    assert!(
        !split.contains_key(&fanout::key(1, a.id)),
        "progress key cleared at the end"
    );
    assert_eq!(whole, split);
}

#[test]
fn exactly_divisible_fanout_needs_no_extra_step() {
    let g = graph_with(1, 2..=11);
    let mut kv = BTreeMap::new();
    let steps = run_activity(
        &mut kv,
        &activity(1, vec![]),
        &g,
        &FanoutConfig {
            max_entries_per_step: 5,
            ..Default::default()
        },
    );
    assert_eq!(steps, 2);
    assert_eq!(feed_owners(&kv, FeedKind::Home, 0..20).len(), 11);
}

#[test]
fn replaying_an_activity_changes_no_entry() {
    let g = graph_with(1, [2, 3]);
    let a = activity(1, vec![4]);
    let mut once = BTreeMap::new();
    run_activity(&mut once, &a, &g, &FanoutConfig::default());
    let mut twice = once.clone();
    run_activity(&mut twice, &a, &g, &FanoutConfig::default());
    let no_versions = |kv: &BTreeMap<Vec<u8>, Vec<u8>>| -> BTreeMap<Vec<u8>, Vec<u8>> {
        let (b, e) = crate::keys::keyspace_range(1, "fver");
        kv.iter()
            .filter(|(k, _)| !(b <= **k && **k < e))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    // Index and bodies are identical; only the cache validators moved.
    assert_eq!(no_versions(&once), no_versions(&twice));
}

#[test]
fn retraction_removes_every_entry_and_leaves_a_tombstone() {
    let g = graph_with(1, 2..=13);
    let a = activity(1, vec![20, 21]);
    let cfg = FanoutConfig {
        max_entries_per_step: 4,
        ..Default::default()
    };
    let mut kv = BTreeMap::new();
    run_activity(&mut kv, &a, &g, &cfg);
    let r = Retraction {
        id: EventId::from_bytes([1; 16]),
        activity_id: a.id,
        actor: 1,
        time_ms: 2_000,
        producer: Producer::new("t", "1"),
    };
    let place = Placement::from(&a);
    let mut resume = None;
    loop {
        let plan = plan_retraction(1, &r, &place, &g, &cfg, resume).unwrap();
        apply(&mut kv, &writes(&plan));
        resume = plan.resume;
        let Some(last) = resume else { break };
        // The cursor says it is a removal, so the activity cannot mistake it for its own.
        let cursor = kv
            .get(&fanout::key(1, a.id))
            .map(|v| fanout::Cursor::decode(v));
        let owner = Some(fanout::Owner::Removal(1));
        assert_eq!(cursor, Some(Some(fanout::Cursor { last, owner })));
    }
    let (b, e) = crate::keys::keyspace_range(1, "feed");
    assert_eq!(kv.range(b..e).count(), 0, "no index entry left");
    assert_eq!(
        kv.get(&messages::key(1, a.id)).unwrap(),
        &messages::tombstone(2_000)
    );
    assert!(!kv.contains_key(&fanout::key(1, a.id)));
}

#[test]
fn graph_changes_count_once() {
    let g = |op| GraphChange {
        id: EventId::MIN,
        actor: 1,
        subject: 2,
        op,
        time_ms: 5,
        producer: Producer::new("t", "1"),
    };
    let mut kv = BTreeMap::new();
    let step = |kv: &mut BTreeMap<Vec<u8>, Vec<u8>>, op| {
        let ch = g(op);
        let exists = kv.contains_key(&graph_edge_key(1, &ch));
        apply(kv, &writes(&plan_graph(1, &ch, exists)));
    };
    step(&mut kv, GraphOp::Follow);
    step(&mut kv, GraphOp::Follow);
    let followers = |kv: &BTreeMap<Vec<u8>, Vec<u8>>| {
        kv.get(&graph::count(1, 2, Count::Followers))
            .map_or(0, |v| decode_i64(v))
    };
    assert_eq!(followers(&kv), 1);
    assert!(kv.contains_key(&graph::edge(1, Edge::Follower, 2, 1)));
    assert!(kv.contains_key(&graph::edge(1, Edge::Following, 1, 2)));
    step(&mut kv, GraphOp::Unfollow);
    step(&mut kv, GraphOp::Unfollow);
    assert_eq!(followers(&kv), 0);
    assert!(!kv.contains_key(&graph::edge(1, Edge::Follower, 2, 1)));
    let count = |kv: &BTreeMap<Vec<u8>, Vec<u8>>, what| {
        kv.get(&graph::count(1, 1, what))
            .map_or(0, |v| decode_i64(v))
    };
    step(&mut kv, GraphOp::Block);
    step(&mut kv, GraphOp::Block);
    assert!(kv.contains_key(&graph::edge(1, Edge::Block, 1, 2)));
    assert_eq!(
        count(&kv, Count::Blocking),
        1,
        "readers skip the block list at 0"
    );
    step(&mut kv, GraphOp::Unblock);
    step(&mut kv, GraphOp::Unblock);
    assert!(!kv.contains_key(&graph::edge(1, Edge::Block, 1, 2)));
    assert_eq!(count(&kv, Count::Blocking), 0);
    step(&mut kv, GraphOp::Mute);
    assert!(kv.contains_key(&graph::edge(1, Edge::Mute, 1, 2)));
    assert_eq!(count(&kv, Count::Muting), 1);
    step(&mut kv, GraphOp::Unmute);
    assert_eq!(count(&kv, Count::Muting), 0);
}

#[test]
fn backfill_marks_entries_as_followed() {
    let pos = Position {
        time_ms: 3,
        id: EventId::MAX,
    };
    let e = FeedEntry {
        actor: 2,
        verb: "post".into(),
        object: "p".into(),
        reason: Reason::Own,
    };
    let plan = plan_backfill(1, 7, &[(pos, e)]);
    let mut kv = BTreeMap::new();
    apply(&mut kv, &writes(&plan));
    let v = kv.get(&feed::key(1, 7, FeedKind::Home, pos)).unwrap();
    assert_eq!(FeedEntry::decode(v).unwrap().reason, Reason::Follow);
    assert_eq!(plan_backfill(1, 7, &[]), Plan::default());
}

#[test]
fn placement_round_trips() {
    let p = Placement::from(&activity(3, vec![4, 5]));
    assert_eq!(Placement::decode(p.id, &p.encode()), Some(p.clone()));
    assert_eq!(Placement::decode(p.id, &p.encode()[..10]), None);
    assert_eq!(Placement::decode(p.id, &[0xff; 12]), None);
}

/// What a plan calls blind is never read by planning, so consumers may leave it out of their
/// overlay: it must be home or notification entries and feed versions, and nothing else — in
/// particular never a user-feed entry (a follow's backfill reads user feeds).
#[test]
fn blind_writes_are_home_and_notification_entries_and_versions() {
    let p = 1;
    let blind_key = |k: &[u8]| {
        if crate::keys::fver::parse_key(p, k).is_some() || k == crate::keys::fver::bodies(p) {
            return true;
        }
        [FeedKind::Home, FeedKind::Notifications]
            .iter()
            .any(|kind| {
                (1..=9).any(|owner| {
                    let sub = feed::feed(p, owner, *kind);
                    sub.is_start_of(k)
                })
            })
    };
    let g = graph_with(1, [2, 3, 4]);
    let a = activity(1, vec![5, 6]);
    let cfg = FanoutConfig {
        max_entries_per_step: 2,
        ..FanoutConfig::default()
    };
    let place = Placement::from(&a);
    let r = Retraction {
        id: EventId::MIN,
        activity_id: a.id,
        actor: 1,
        time_ms: a.time_ms + 1,
        producer: Producer::new("t", "1"),
    };
    let follow = GraphChange {
        id: EventId::MIN,
        actor: 7,
        subject: 1,
        op: GraphOp::Follow,
        time_ms: 9,
        producer: Producer::new("t", "1"),
    };
    let user_feed = feed::feed(p, 1, FeedKind::User);
    let mut plans = vec![
        plan_activity(
            p,
            &a,
            b"body".to_vec(),
            &g,
            &cfg,
            &FanoutOptions::default(),
            None,
        )
        .unwrap(),
        plan_activity(
            p,
            &a,
            b"body".to_vec(),
            &g,
            &cfg,
            &FanoutOptions::default(),
            Some(2),
        )
        .unwrap(),
        plan_retraction(p, &r, &place, &g, &cfg, None).unwrap(),
        plan_update(p, a.id, b"new".to_vec()),
        plan_backfill(p, 7, &[(place.position(), place.entry(feed::Reason::Own))]),
    ];
    for op in GraphOp::ALL {
        for exists in [false, true] {
            plans.push(plan_graph(
                p,
                &GraphChange {
                    op,
                    ..follow.clone()
                },
                exists,
            ));
        }
    }
    let mut blind = 0;
    for plan in plans {
        for m in &plan.blind {
            assert!(blind_key(m.key()), "blind write of a readable key: {m:?}");
            blind += 1;
        }
        for b in plan
            .bumps
            .iter()
            .copied()
            .chain(plan.spreads.iter().flat_map(|s| s.bumps()))
        {
            assert!(blind_key(&b.key()), "bump of a readable key: {b:?}");
            blind += 1;
        }
        for m in plan.spreads.iter().flat_map(|s| s.entries()) {
            assert!(blind_key(m.key()), "spread entry of a readable key: {m:?}");
            blind += 1;
        }
        for m in &plan.visible {
            assert!(
                !blind_key(m.key()),
                "visible write that could be blind: {m:?}"
            );
        }
        assert!(plan.blind.iter().all(|m| !user_feed.is_start_of(m.key())));
    }
    assert!(
        blind > 10,
        "the plans above write home entries and versions"
    );
}

/// `g`, where `blockers` block the author and `muters` mute them; counts the lookups.
struct Filtering<'a> {
    g: &'a Graph,
    blockers: BTreeSet<UserId>,
    muters: BTreeSet<UserId>,
    lookups: std::cell::Cell<usize>,
}

impl GraphView for Filtering<'_> {
    type Error = Infallible;
    fn follower_count(&self, user: UserId) -> Result<u64, Infallible> {
        self.g.follower_count(user)
    }
    fn followers_after(
        &self,
        user: UserId,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, Infallible> {
        self.g.followers_after(user, after, limit)
    }
    fn excluded(
        &self,
        _actor: UserId,
        users: &[UserId],
        blocks: bool,
        mutes: bool,
    ) -> Result<Vec<bool>, Infallible> {
        self.lookups.set(self.lookups.get() + 1);
        Ok(users
            .iter()
            .map(|u| (blocks && self.blockers.contains(u)) || (mutes && self.muters.contains(u)))
            .collect())
    }
}

/// Runs an activity's plan to completion with `opts`; returns the number of steps.
fn run_with(
    kv: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    a: &Activity,
    g: &impl GraphView<Error = Infallible>,
    cfg: &FanoutConfig,
    opts: &FanoutOptions,
) -> usize {
    let mut resume = None;
    for steps in 1.. {
        let plan = plan_activity(1, a, b"body".to_vec(), g, cfg, opts, resume).unwrap();
        apply(kv, &writes(&plan));
        resume = plan.resume;
        if resume.is_none() {
            return steps;
        }
    }
    unreachable!()
}

#[test]
fn blockers_and_muters_are_skipped_with_one_lookup_per_step() {
    let g = graph_with(1, [2, 3, 4, 5, 6]);
    let f = Filtering {
        g: &g,
        blockers: [3, 7].into(),
        muters: [4].into(),
        lookups: Default::default(),
    };
    let cfg = FanoutConfig {
        max_entries_per_step: 3,
        ..FanoutConfig::default()
    };
    let a = activity(1, vec![7, 8]);

    let opts = FanoutOptions {
        skip_blocking_followers: true,
        skip_muting_followers: true,
        skip_blocking_recipients: true,
        ..FanoutOptions::default()
    };
    let mut kv = BTreeMap::new();
    assert_eq!(run_with(&mut kv, &a, &f, &cfg, &opts), 2);
    assert_eq!(feed_owners(&kv, FeedKind::Home, 0..10), vec![1, 2, 5, 6]);
    assert_eq!(feed_owners(&kv, FeedKind::Notifications, 0..10), vec![8]);
    // The recipients once, then one lookup per fan-out step.
    assert_eq!(f.lookups.get(), 3);
    assert!(!kv.contains_key(&fanout::key(1, a.id)), "fan-out finished");

    // Blocks only: the muter still gets it.
    let opts = FanoutOptions {
        skip_blocking_followers: true,
        ..FanoutOptions::default()
    };
    let mut kv = BTreeMap::new();
    run_with(&mut kv, &a, &f, &cfg, &opts);
    assert_eq!(feed_owners(&kv, FeedKind::Home, 0..10), vec![1, 2, 4, 5, 6]);
    assert_eq!(feed_owners(&kv, FeedKind::Notifications, 0..10), vec![7, 8]);
}

#[test]
fn targets_choose_the_feeds_and_a_retraction_still_removes_everything() {
    let g = graph_with(1, [2, 3]);
    let a = activity(1, vec![5]);
    let cfg = FanoutConfig::default();
    let only_notes = FanoutOptions {
        targets: Targets {
            followers: false,
            own: false,
            notifications: true,
        },
        ..FanoutOptions::default()
    };
    let mut kv = BTreeMap::new();
    run_with(&mut kv, &a, &g, &cfg, &only_notes);
    assert_eq!(
        feed_owners(&kv, FeedKind::Home, 0..10),
        Vec::<UserId>::new()
    );
    assert_eq!(
        feed_owners(&kv, FeedKind::User, 0..10),
        Vec::<UserId>::new()
    );
    assert_eq!(feed_owners(&kv, FeedKind::Notifications, 0..10), vec![5]);
    assert_eq!(kv.get(&messages::key(1, a.id)).unwrap(), b"body");

    let own_and_notes = FanoutOptions {
        targets: Targets {
            followers: false,
            ..Targets::default()
        },
        ..FanoutOptions::default()
    };
    let mut kv = BTreeMap::new();
    run_with(&mut kv, &a, &g, &cfg, &own_and_notes);
    assert_eq!(feed_owners(&kv, FeedKind::Home, 0..10), vec![1]);
    assert_eq!(feed_owners(&kv, FeedKind::User, 0..10), vec![1]);

    // The retraction does not know how it was routed: it clears every place it could be.
    let r = Retraction {
        id: EventId::from_bytes([8; 16]),
        activity_id: a.id,
        actor: 1,
        time_ms: 2_000,
        producer: Producer::new("t", "1"),
    };
    let plan = plan_retraction(1, &r, &Placement::from(&a), &g, &cfg, None).unwrap();
    apply(&mut kv, &writes(&plan));
    for kind in FeedKind::ALL {
        assert_eq!(feed_owners(&kv, kind, 0..10), Vec::<UserId>::new());
    }
}
