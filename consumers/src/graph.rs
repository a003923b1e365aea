//! The follow graph as seen through a store snapshot, for fan-out planning.

use tidings_core::fanout::GraphView;
use tidings_core::keys::graph::{self, Count, Edge};
use tidings_core::keys::Projection;
use tidings_core::write::decode_i64;
use tidings_core::UserId;
use tidings_store::{RangeOptions, ReadView};

/// [`GraphView`] over one read view of projection `p`.
pub struct StoreGraph<'a> {
    view: &'a dyn ReadView,
    p: Projection,
}

impl std::fmt::Debug for StoreGraph<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreGraph").field("p", &self.p).finish()
    }
}

impl<'a> StoreGraph<'a> {
    /// Reads the graph of projection `p` through `view`.
    pub fn new(view: &'a dyn ReadView, p: Projection) -> Self {
        StoreGraph { view, p }
    }
}

impl GraphView for StoreGraph<'_> {
    type Error = tidings_store::Error;

    fn follower_count(&self, user: UserId) -> Result<u64, Self::Error> {
        let v = self
            .view
            .get(&graph::count(self.p, user, Count::Followers))?;
        Ok(v.map_or(0, |v| decode_i64(&v).max(0) as u64))
    }

    fn followers_after(
        &self,
        user: UserId,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, Self::Error> {
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
