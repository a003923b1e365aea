//! The follow graph as seen through a store snapshot, for fan-out planning.

use std::cell::{Cell, RefCell};

use tidings_core::fanout::GraphView;
use tidings_core::keys::graph::{self, Count, Edge};
use tidings_core::keys::{Projection, Subspace};
use tidings_core::write::decode_i64;
use tidings_core::{Mutation, UserId};
use tidings_store::fasthash::FastMap;
use tidings_store::{RangeOptions, ReadView};

/// [`GraphView`] over one read view of projection `p`.
pub struct StoreGraph<'a> {
    view: &'a dyn ReadView,
    p: Projection,
    memo: Option<&'a FollowerMemo>,
}

/// Follower counts and first follower lists of a bulk run, decoded once and kept across its
/// events and batches: an author posts again and again, and each post read its list through
/// the overlay's layers and the read cache and decoded every key again.
///
/// Sound only while every write of the projection passes [`FollowerMemo::wrote`] before the
/// next read — a bulk run, the projection's only writer, whose planned writes all go through
/// one place — which forgets each user whose follower edges a write touches, adds an atomic
/// add to a follower count it holds (a follow: the count stays known, a read less per follow)
/// and forgets a count set or cleared (everything on a clear-range over either keyspace).
/// Bounded: past [`FollowerMemo::MAX_IDS`] follower ids (or as many counts) held, it starts
/// over empty.
#[derive(Debug)]
pub struct FollowerMemo {
    followers: Subspace,
    counts: Subspace,
    /// Follower counts as stored (i64; a reader sees negatives as 0).
    known_counts: RefCell<FastMap<UserId, i64>>,
    /// The first page of a user's followers, with the limit it was read with.
    known_lists: RefCell<FastMap<UserId, (usize, Vec<UserId>)>>,
    /// Follower ids held in `known_lists`, and the most it may hold.
    held: Cell<usize>,
    max_ids: usize,
}

impl FollowerMemo {
    /// The most follower ids (8 bytes each: 128 MiB) a memo holds before it starts over.
    pub const MAX_IDS: usize = 1 << 24;

    /// An empty memo of projection `p`.
    pub fn new(p: Projection) -> Self {
        Self::bounded(p, Self::MAX_IDS)
    }

    /// An empty memo of projection `p` holding at most `max_ids` follower ids.
    pub fn bounded(p: Projection, max_ids: usize) -> Self {
        FollowerMemo {
            followers: graph::edges(p, Edge::Follower),
            counts: graph::counts(p),
            known_counts: RefCell::default(),
            known_lists: RefCell::default(),
            held: Cell::new(0),
            max_ids,
        }
    }

    fn remember_list(&self, user: UserId, limit: usize, list: &[UserId]) {
        let mut lists = self.known_lists.borrow_mut();
        if self.held.get() + list.len() > self.max_ids {
            lists.clear();
            self.held.set(0);
        }
        self.held.set(self.held.get() + list.len());
        if let Some((_, old)) = lists.insert(user, (limit, list.to_vec())) {
            self.held.set(self.held.get() - old.len());
        }
    }

    fn remember_count(&self, user: UserId, n: i64) {
        let mut counts = self.known_counts.borrow_mut();
        if counts.len() >= self.max_ids {
            counts.clear();
        }
        counts.insert(user, n);
    }

    /// Forgets `user`'s list (`None`: every list).
    fn forget_lists(&self, user: Option<UserId>) {
        let mut lists = self.known_lists.borrow_mut();
        match user {
            Some(u) => {
                if let Some((_, old)) = lists.remove(&u) {
                    self.held.set(self.held.get() - old.len());
                }
            }
            None => {
                lists.clear();
                self.held.set(0);
            }
        }
    }

    /// Forgets what `ms` (writes about to become visible to planning) may change.
    pub fn wrote(&self, ms: &[Mutation]) {
        for m in ms {
            match m {
                Mutation::Set { key, .. } | Mutation::Clear { key } => self.wrote_key(key, None),
                Mutation::Add { key, delta } => self.wrote_key(key, Some(*delta)),
                Mutation::ClearRange { begin, end } => {
                    let overlaps = |sub: &Subspace| {
                        let (b, e) = sub.range();
                        begin.as_slice() < e.as_slice() && b.as_slice() < end.as_slice()
                    };
                    if overlaps(&self.followers) || overlaps(&self.counts) {
                        self.known_counts.borrow_mut().clear();
                        self.forget_lists(None);
                    }
                }
            }
        }
    }

    /// `added`: the write is an atomic add of this much (else a set or a clear).
    fn wrote_key(&self, key: &[u8], added: Option<i64>) {
        if key.starts_with(self.followers.bytes()) {
            let followee = graph::parse_any_edge(&self.followers, key).map(|(f, _)| f);
            self.forget_lists(followee);
        } else if key.starts_with(self.counts.bytes()) {
            let mut counts = self.known_counts.borrow_mut();
            match graph::parse_count(&self.counts, key) {
                // Another count of the user: not held.
                Some((_, Some(what))) if what != Count::Followers => {}
                Some((user, Some(_))) => match (added, counts.get_mut(&user)) {
                    (Some(delta), Some(n)) => *n = n.wrapping_add(delta),
                    (Some(_), None) => {}
                    (None, _) => {
                        counts.remove(&user);
                    }
                },
                Some((user, None)) => {
                    counts.remove(&user);
                }
                None => counts.clear(),
            }
        }
    }
}

impl std::fmt::Debug for StoreGraph<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreGraph").field("p", &self.p).finish()
    }
}

impl<'a> StoreGraph<'a> {
    /// Reads the graph of projection `p` through `view`.
    pub fn new(view: &'a dyn ReadView, p: Projection) -> Self {
        Self::with_memo(view, p, None)
    }

    /// [`StoreGraph::new`] answering repeats from (and filling) `memo`, which must be
    /// projection `p`'s and hold only what is true of `view` (see [`FollowerMemo`]).
    pub fn with_memo(
        view: &'a dyn ReadView,
        p: Projection,
        memo: Option<&'a FollowerMemo>,
    ) -> Self {
        StoreGraph { view, p, memo }
    }

    /// The follower count as stored (0 when absent).
    fn read_count(&self, user: UserId) -> Result<i64, tidings_store::Error> {
        let v = self
            .view
            .get(&graph::count(self.p, user, Count::Followers))?;
        Ok(v.map_or(0, |v| decode_i64(&v)))
    }

    fn read_followers(
        &self,
        user: UserId,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, tidings_store::Error> {
        let sub = graph::edges_of(self.p, Edge::Follower, user);
        let (begin, end) = sub.range();
        let begin = match after {
            // Strictly after `after`: its key plus a zero byte is the next possible key.
            Some(a) => {
                let mut k = graph::edge(self.p, Edge::Follower, user, a);
                k.push(0);
                k
            }
            None => begin,
        };
        // Grown as rows come: the list is kept (a spread's owners) until its batch is written.
        let mut followers = Vec::new();
        self.view
            .range_visit(&begin, &end, RangeOptions::forward(limit), &mut |k, _| {
                followers.extend(graph::parse_edge(&sub, k));
            })?;
        Ok(followers)
    }
}

impl GraphView for StoreGraph<'_> {
    type Error = tidings_store::Error;

    fn follower_count(&self, user: UserId) -> Result<u64, Self::Error> {
        let stored = match self.memo {
            None => self.read_count(user)?,
            Some(memo) => {
                let known = memo.known_counts.borrow().get(&user).copied();
                match known {
                    Some(n) => n,
                    None => {
                        let n = self.read_count(user)?;
                        memo.remember_count(user, n);
                        n
                    }
                }
            }
        };
        Ok(stored.max(0) as u64)
    }

    fn followers_after(
        &self,
        user: UserId,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, Self::Error> {
        // The first page only: later ones are steps of a large fan-out, read once each.
        let Some(memo) = self.memo.filter(|_| after.is_none()) else {
            return self.read_followers(user, after, limit);
        };
        if let Some((l, list)) = memo.known_lists.borrow().get(&user) {
            if *l == limit {
                return Ok(list.clone());
            }
        }
        let list = self.read_followers(user, None, limit)?;
        memo.remember_list(user, limit, &list);
        Ok(list)
    }

    fn excluded(
        &self,
        actor: UserId,
        users: &[UserId],
        blocks: bool,
        mutes: bool,
    ) -> Result<Vec<bool>, Self::Error> {
        let sets: Vec<Edge> = [(blocks, Edge::Block), (mutes, Edge::Mute)]
            .into_iter()
            .filter_map(|(on, set)| on.then_some(set))
            .collect();
        if sets.is_empty() || users.is_empty() {
            return Ok(vec![false; users.len()]);
        }
        // One multi-get: for each set, the edge `user → actor` of every user.
        let keys: Vec<Vec<u8>> = sets
            .iter()
            .flat_map(|set| users.iter().map(|u| graph::edge(self.p, *set, *u, actor)))
            .collect();
        let found = self.view.get_many(&keys)?;
        let n = users.len();
        Ok((0..n)
            .map(|i| (0..sets.len()).any(|s| found.get(s * n + i).is_some_and(Option::is_some)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::fanout::{graph_edge_key, plan_graph};
    use tidings_core::{EventId, GraphChange, GraphOp, Producer};
    use tidings_store::rocks::{RocksOptions, RocksStore};
    use tidings_store::{Overlay, Store};

    /// Follows, unfollows and blocks among six users, planned and made visible through an
    /// overlay as a bulk run does; after each, the memo'd graph answers exactly as a fresh read
    /// (also after a clear-range of the follower edges), its counts kept up by the adds. Without
    /// telling the memo it goes stale.
    fn run(tell: bool, max_ids: usize) -> Result<(), String> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = RocksStore::open(dir.path(), RocksOptions::default()).expect("open RocksDB");
        let snap = store.snapshot().expect("snapshot");
        let mut overlay = Overlay::new(&*snap);
        let memo = FollowerMemo::bounded(1, max_ids);
        let mut seed = 7u64;
        for step in 0..400u32 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (actor, subject) = ((seed >> 33) % 6 + 1, (seed >> 41) % 6 + 1);
            let ms = if step % 97 == 96 {
                let (b, e) = graph::edges(1, Edge::Follower).range();
                vec![Mutation::ClearRange { begin: b, end: e }]
            } else if actor != subject {
                let g = GraphChange {
                    id: EventId::from_bytes([step as u8; 16]),
                    actor: actor as UserId,
                    subject: subject as UserId,
                    // Blocks add to another count of the actor, which the memo does not hold.
                    op: match seed % 5 {
                        0 => GraphOp::Unfollow,
                        1 => GraphOp::Block,
                        _ => GraphOp::Follow,
                    },
                    time_ms: i64::from(step),
                    producer: Producer::new("t", "1"),
                };
                let exists = overlay
                    .get(&graph_edge_key(1, &g))
                    .expect("edge read")
                    .is_some();
                plan_graph(1, &g, exists).visible
            } else {
                continue;
            };
            if tell {
                memo.wrote(&ms);
            }
            overlay.apply(&ms);
            let (cached, fresh) = (
                StoreGraph::with_memo(&overlay, 1, Some(&memo)),
                StoreGraph::new(&overlay, 1),
            );
            for u in 1..=6 {
                for limit in [2, 10] {
                    let got = cached.followers_after(u, None, limit).expect("read");
                    let want = fresh.followers_after(u, None, limit).expect("read");
                    if got != want {
                        return Err(format!(
                            "step {step}: followers of {u} (limit {limit}): {got:?}, want {want:?}"
                        ));
                    }
                }
                let (got, want) = (
                    cached.follower_count(u).expect("read"),
                    fresh.follower_count(u).expect("read"),
                );
                if got != want {
                    return Err(format!("step {step}: count of {u}: {got}, want {want}"));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_follower_memo_answers_as_a_fresh_read_through_follows_unfollows_and_clears() {
        run(true, FollowerMemo::MAX_IDS).unwrap_or_else(|e| panic!("{e}"));
        // So small that it starts over all the time.
        run(true, 7).unwrap_or_else(|e| panic!("bounded: {e}"));
        assert!(
            run(false, FollowerMemo::MAX_IDS).is_err(),
            "an untold memo must go stale (the test sees it)"
        );
    }
}
