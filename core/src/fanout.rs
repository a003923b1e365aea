//! Fan-out planning: (event, graph view) → the writes that apply it.
//!
//! Pure functions. The consumer gives them a [`GraphView`] backed by a store snapshot, commits
//! the returned [`Plan`] in one batch with its offset, and calls again with [`Plan::resume`]
//! while a fan-out is too large for one batch. Every key written derives from the event, so
//! planning the same event twice yields the same writes (idempotent replays).
//!
//! An activity by `actor` writes:
//! - its body once: `(p, "msg", id)`;
//! - the actor's user feed and the actor's own home feed;
//! - a notification entry for each explicit recipient in `to` (not the actor);
//! - a home entry for each follower — unless the actor has more than
//!   [`FanoutConfig::hybrid_threshold`] followers, in which case readers pull the actor's user
//!   feed at read time (hybrid push/pull) and nothing is pushed;
//! - one feed-version bump per feed touched.
//!
//! The processor chain (`process`) can narrow an activity's fan-out with [`FanoutOptions`]:
//! which feeds it goes to ([`Targets`], the `route` processor) and whether followers and
//! recipients who block (or mute) the actor are skipped (`block_mute_filter`, one multi-get of
//! the edges per step: [`GraphView::excluded`]).
//!
//! Retractions remove the same entries (the body becomes a tombstone first, so readers stop
//! showing it at once); updates change only the body. Both bump the projection's body version
//! ([`fver::bodies`]) so no cached page shows the old body. Graph changes write both directions of an
//! edge and the counts, only when the edge actually changes, so a repeated follow counts once.

use crate::event::{Activity, EventId, GraphChange, GraphOp, Retraction, UserId};
use crate::keys::feed::{self, FeedEntry, FeedKind, Position, Reason};
use crate::keys::graph::{self, Count, Edge};
use crate::keys::{fanout, fver, messages, Projection};
use crate::write::{encode_i64, Mutation};

/// Tunables of fan-out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FanoutConfig {
    /// Authors with more followers than this are not pushed; readers pull them.
    pub hybrid_threshold: u64,
    /// Most follower entries written per plan step (bounds the batch size: ~80 B each).
    pub max_entries_per_step: usize,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            hybrid_threshold: 10_000,
            max_entries_per_step: 5_000,
        }
    }
}

/// Which feeds an activity goes to (all by default; the `route` processor narrows them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Targets {
    /// The home feeds of the actor's followers.
    pub followers: bool,
    /// The actor's own user feed and home feed.
    pub own: bool,
    /// The notification feeds of the explicit recipients (`to`).
    pub notifications: bool,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            followers: true,
            own: true,
            notifications: true,
        }
    }
}

/// How one activity fans out, as the processor chain decided (the default: as always).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FanoutOptions {
    /// Which feeds it goes to.
    pub targets: Targets,
    /// Skip followers who block the actor.
    pub skip_blocking_followers: bool,
    /// Skip followers who mute the actor.
    pub skip_muting_followers: bool,
    /// Skip recipients (`to`) who block the actor.
    pub skip_blocking_recipients: bool,
}

/// What fan-out needs to know about the graph. Implemented over a store snapshot by the
/// consumers, and over plain maps in tests.
pub trait GraphView {
    /// The error of the backing store.
    type Error;
    /// How many users follow `user`.
    fn follower_count(&self, user: UserId) -> Result<u64, Self::Error>;
    /// Up to `limit` followers of `user` with ids greater than `after`, in id order.
    fn followers_after(
        &self,
        user: UserId,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<UserId>, Self::Error>;
    /// For each of `users`, whether they block `actor` (`blocks`) or mute `actor` (`mutes`):
    /// one multi-get of the edges.
    fn excluded(
        &self,
        actor: UserId,
        users: &[UserId],
        blocks: bool,
        mutes: bool,
    ) -> Result<Vec<bool>, Self::Error>;
}

/// One step of applying an event.
///
/// Its writes come in four lists. [`Plan::visible`] holds what planning may read back —
/// bodies, user feeds (a follow's backfill reads them), graph edges and counts, cursors — so a
/// consumer planning many events against one batch must make these visible to the events after
/// (through an overlay). [`Plan::blind`] holds what no planner ever reads: entries of home and
/// notification feeds; they only have to be committed, in the same batch. The rest are blind
/// too and kept unbuilt: [`Plan::spreads`], the followers' home entries (most of a fan-out's
/// writes), and [`Plan::bumps`], feed-version bumps, so a consumer can build their keys where
/// it has time (a rebuild: on its commit thread) and sum bumps per feed first. All go into the
/// batch, the spreads in order; [`Plan::writes`] gives them together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Writes that planning of later events may read back.
    pub visible: Vec<Mutation>,
    /// Writes no planner reads back (home and notification entries, the body version).
    pub blind: Vec<Mutation>,
    /// Home entries of followers, one activity each (no planner reads them back). A consumer
    /// may build them after the batch's other writes, in order among themselves: the only key
    /// written both ways is a follower's home entry that a follow's backfill writes too, with
    /// the same value — never an author's own entry, as nobody follows themselves (validation
    /// rejects it) — and a retraction's spread, which clears it, comes after both either way.
    pub spreads: Vec<Spread>,
    /// Feed-version bumps (each adds 1; no planner reads them back).
    pub bumps: Vec<fver::Bump>,
    /// Index entries written (or removed) by this step.
    pub entries: u64,
    /// `Some(last follower done)` if the event needs another step; the progress key holding
    /// it is already among `visible`.
    pub resume: Option<UserId>,
}

impl Plan {
    /// Every write of the step: [`Plan::visible`], [`Plan::blind`], the spreads (their entries
    /// and bumps), then the bumps.
    pub fn writes(self) -> impl Iterator<Item = Mutation> {
        let spreads = self.spreads.into_iter().flat_map(|s| {
            let mut ms: Vec<Mutation> = s.entries().collect();
            ms.extend(s.bumps().map(|b| b.mutation(1)));
            ms
        });
        let bumps = self.bumps.into_iter().map(|b| b.mutation(1));
        self.visible
            .into_iter()
            .chain(self.blind)
            .chain(spreads)
            .chain(bumps)
    }

    /// Appends another plan's writes (its `entries` too; `resume` is left as it is).
    pub fn absorb(&mut self, other: Plan) {
        self.visible.extend(other.visible);
        self.blind.extend(other.blind);
        self.spreads.extend(other.spreads);
        self.bumps.extend(other.bumps);
        self.entries += other.entries;
    }

    fn bump(&mut self, p: Projection, owner: UserId, kind: FeedKind) {
        self.bumps.push(fver::Bump { p, owner, kind });
    }

    fn list(&mut self, kind: FeedKind) -> &mut Vec<Mutation> {
        match kind {
            FeedKind::User => &mut self.visible,
            FeedKind::Home | FeedKind::Notifications => &mut self.blind,
        }
    }

    fn entry(
        &mut self,
        p: Projection,
        owner: UserId,
        kind: FeedKind,
        pos: Position,
        e: &FeedEntry,
    ) {
        self.list(kind).push(Mutation::Set {
            key: feed::key(p, owner, kind, pos),
            value: e.encode(),
        });
        self.bump(p, owner, kind);
        self.entries += 1;
    }

    fn unentry(&mut self, p: Projection, owner: UserId, kind: FeedKind, pos: Position) {
        self.list(kind).push(Mutation::Clear {
            key: feed::key(p, owner, kind, pos),
        });
        self.bump(p, owner, kind);
        self.entries += 1;
    }
}

/// One activity's entries in the home feeds of many followers, or their removal, before any
/// key is built (see [`Plan::spreads`]). Each owner's entry also bumps that feed's version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spread {
    /// Projection.
    pub p: Projection,
    /// Where the entries sit in each feed.
    pub pos: Position,
    /// The encoded entry ([`FeedEntry::encode`]); `None`: the entries are removed.
    pub value: Option<Vec<u8>>,
    /// The feeds' owners.
    pub owners: Vec<UserId>,
}

impl Spread {
    /// Builds the entries' keys: [`feed::KeysAt::key`] of each owner.
    pub fn keys(&self) -> feed::KeysAt {
        feed::KeysAt::new(self.p, FeedKind::Home, self.pos)
    }

    /// The entries written (or removed), in owner order.
    pub fn entries(&self) -> impl Iterator<Item = Mutation> + '_ {
        let keys = self.keys();
        self.owners.iter().map(move |&owner| {
            let key = keys.key(owner);
            match &self.value {
                Some(v) => Mutation::Set {
                    key,
                    value: v.clone(),
                },
                None => Mutation::Clear { key },
            }
        })
    }

    /// A version bump per feed.
    pub fn bumps(&self) -> impl Iterator<Item = fver::Bump> + '_ {
        self.owners.iter().map(|&owner| fver::Bump {
            p: self.p,
            owner,
            kind: FeedKind::Home,
        })
    }

    /// Bytes its entries add to a batch as [`Mutation::size`] counts them, estimated from the
    /// first owner's key (other owners' ids may encode a few bytes longer or shorter).
    pub fn size(&self) -> usize {
        let Some(&first) = self.owners.first() else {
            return 0;
        };
        let key = feed::key(self.p, first, FeedKind::Home, self.pos).len();
        self.owners.len() * (key + self.value.as_ref().map_or(0, Vec::len))
    }
}

/// The facts of an activity that locate its index entries: enough to write or remove them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Activity id.
    pub id: EventId,
    /// Author.
    pub actor: UserId,
    /// Activity time (the index position).
    pub time_ms: i64,
    /// Verb, for the entry value.
    pub verb: String,
    /// Object, for the entry value.
    pub object: String,
    /// Explicit recipients.
    pub to: Vec<UserId>,
}

impl From<&Activity> for Placement {
    fn from(a: &Activity) -> Self {
        Placement {
            id: a.id,
            actor: a.actor,
            time_ms: a.time_ms,
            verb: a.verb.clone(),
            object: a.object.clone(),
            to: a.to.clone(),
        }
    }
}

impl Placement {
    /// Encodes the placement (kept while a large retraction is under way):
    /// `time_ms:i64LE n:u32LE to:[i64LE; n] entry:FeedEntry`.
    pub fn encode(&self) -> Vec<u8> {
        let entry = self.entry(Reason::Own).encode();
        let mut v = Vec::with_capacity(12 + self.to.len() * 8 + entry.len());
        v.extend_from_slice(&self.time_ms.to_le_bytes());
        v.extend_from_slice(&(self.to.len() as u32).to_le_bytes());
        for r in &self.to {
            v.extend_from_slice(&r.to_le_bytes());
        }
        v.extend_from_slice(&entry);
        v
    }

    /// Decodes [`Placement::encode`] for activity `id`.
    pub fn decode(id: EventId, v: &[u8]) -> Option<Placement> {
        let time_ms = i64::from_le_bytes(v.get(..8)?.try_into().ok()?);
        let n = u32::from_le_bytes(v.get(8..12)?.try_into().ok()?) as usize;
        let body_at = n.checked_mul(8)?.checked_add(12)?;
        let to = v
            .get(12..body_at)?
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let entry = FeedEntry::decode(v.get(body_at..)?)?;
        Some(Placement {
            id,
            actor: entry.actor,
            time_ms,
            verb: entry.verb,
            object: entry.object,
            to,
        })
    }

    fn position(&self) -> Position {
        Position {
            time_ms: self.time_ms,
            id: self.id,
        }
    }

    fn entry(&self, reason: Reason) -> FeedEntry {
        FeedEntry {
            actor: self.actor,
            verb: self.verb.clone(),
            object: self.object.clone(),
            reason,
        }
    }

    /// Distinct notification recipients, in order, without the actor.
    fn recipients(&self) -> Vec<UserId> {
        let mut seen = std::collections::BTreeSet::new();
        self.to
            .iter()
            .copied()
            .filter(|r| *r != self.actor && seen.insert(*r))
            .collect()
    }
}

/// Plans (one step of) an activity's fan-out. `body` is the encoded activity to store;
/// `opts` are the processor chain's fan-out options (the same on every step); `resume` is the
/// cursor from the progress key (or from the previous step).
pub fn plan_activity<G: GraphView>(
    p: Projection,
    a: &Activity,
    body: Vec<u8>,
    graph: &G,
    cfg: &FanoutConfig,
    opts: &FanoutOptions,
    resume: Option<UserId>,
) -> Result<Plan, G::Error> {
    let place = Placement::from(a);
    let mut plan = Plan::default();
    if resume.is_none() {
        plan.visible.push(Mutation::Set {
            key: messages::key(p, a.id),
            value: body,
        });
        let t = opts.targets;
        let mut recipients = if t.notifications {
            place.recipients()
        } else {
            Vec::new()
        };
        if opts.skip_blocking_recipients && !recipients.is_empty() {
            let out = graph.excluded(place.actor, &recipients, true, false)?;
            let mut out = out.into_iter();
            recipients.retain(|_| !out.next().unwrap_or(false));
        }
        for (owner, kind, reason) in own_targets(&place, t.own, recipients) {
            plan.entry(p, owner, kind, place.position(), &place.entry(reason));
        }
    }
    if opts.targets.followers {
        followers_step(p, &place, graph, cfg, opts, resume, &mut plan, true)?;
    }
    Ok(plan)
}

/// Plans (one step of) removing a retracted activity, given where it was placed. The first
/// step replaces the body by a tombstone, so readers hide the activity at once.
pub fn plan_retraction<G: GraphView>(
    p: Projection,
    r: &Retraction,
    place: &Placement,
    graph: &G,
    cfg: &FanoutConfig,
    resume: Option<UserId>,
) -> Result<Plan, G::Error> {
    let mut plan = Plan::default();
    if resume.is_none() {
        plan.visible.push(Mutation::Set {
            key: messages::key(p, place.id),
            value: messages::tombstone(r.time_ms),
        });
        plan.blind.push(fver::bump_bodies(p));
        for (owner, kind, _) in own_targets(place, true, place.recipients()) {
            plan.unentry(p, owner, kind, place.position());
        }
    }
    // Removes from every follower: the activity may have been routed or filtered when it was
    // applied, and clearing an absent entry changes nothing.
    let all = FanoutOptions::default();
    followers_step(p, place, graph, cfg, &all, resume, &mut plan, false)?;
    Ok(plan)
}

/// The writes of an update: the new body only (index entries carry no body fields).
pub fn plan_update(p: Projection, id: EventId, new_body: Vec<u8>) -> Plan {
    Plan {
        visible: vec![Mutation::Set {
            key: messages::key(p, id),
            value: new_body,
        }],
        blind: vec![fver::bump_bodies(p)],
        ..Plan::default()
    }
}

/// The actor's own feeds (when `own`) and the notification feeds of `recipients`.
fn own_targets(
    place: &Placement,
    own: bool,
    recipients: Vec<UserId>,
) -> Vec<(UserId, FeedKind, Reason)> {
    let mut targets = Vec::with_capacity(2 + recipients.len());
    if own {
        targets.push((place.actor, FeedKind::User, Reason::Own));
        targets.push((place.actor, FeedKind::Home, Reason::Own));
    }
    targets.extend(
        recipients
            .into_iter()
            .map(|r| (r, FeedKind::Notifications, Reason::Mention)),
    );
    targets
}

#[allow(clippy::too_many_arguments)]
fn followers_step<G: GraphView>(
    p: Projection,
    place: &Placement,
    graph: &G,
    cfg: &FanoutConfig,
    opts: &FanoutOptions,
    resume: Option<UserId>,
    plan: &mut Plan,
    add: bool,
) -> Result<(), G::Error> {
    let followers = graph.follower_count(place.actor)?;
    if followers > cfg.hybrid_threshold {
        // Pulled at read time; clear any cursor left by a threshold change mid-fan-out.
        if resume.is_some() {
            plan.visible.push(fanout::clear(p, place.id));
        }
        return Ok(());
    }
    if followers == 0 && resume.is_none() {
        // Nobody to push to (most authors of a large graph, at any moment): the count, kept
        // in the same batches as the edges, saves a range read per event.
        return Ok(());
    }
    let limit = cfg.max_entries_per_step.max(1);
    let mut batch = graph.followers_after(place.actor, resume, limit + 1)?;
    let more = batch.len() > limit;
    batch.truncate(limit);
    // The cursor is the last follower of the step, written to or not.
    let last = batch.last().copied().or(resume);
    let (blocks, mutes) = (opts.skip_blocking_followers, opts.skip_muting_followers);
    if add && (blocks || mutes) && !batch.is_empty() {
        let out = graph.excluded(place.actor, &batch, blocks, mutes)?;
        let mut out = out.into_iter();
        batch.retain(|_| !out.next().unwrap_or(false));
    }
    if !batch.is_empty() {
        plan.entries += batch.len() as u64;
        plan.spreads.push(Spread {
            p,
            pos: place.position(),
            value: add.then(|| place.entry(Reason::Follow).encode()),
            owners: batch,
        });
    }
    if more {
        let last = last.unwrap_or(UserId::MIN);
        let owner = if add {
            fanout::Owner::Fanout(place.actor)
        } else {
            fanout::Owner::Removal(place.actor)
        };
        plan.visible.push(fanout::set(p, place.id, last, owner));
        plan.resume = Some(last);
    } else if resume.is_some() {
        plan.visible.push(fanout::clear(p, place.id));
    }
    Ok(())
}

/// The key a graph change depends on: the edge whose presence decides what it writes.
pub fn graph_edge_key(p: Projection, g: &GraphChange) -> Vec<u8> {
    let set = match g.op {
        GraphOp::Follow | GraphOp::Unfollow => Edge::Follower,
        GraphOp::Block | GraphOp::Unblock => Edge::Block,
        GraphOp::Mute | GraphOp::Unmute => Edge::Mute,
    };
    match set {
        Edge::Follower => graph::edge(p, set, g.subject, g.actor),
        _ => graph::edge(p, set, g.actor, g.subject),
    }
}

/// Plans a graph change given whether its edge ([`graph_edge_key`]) exists now. A change that
/// would not change the edge writes nothing, so counts stay exact under repeats.
pub fn plan_graph(p: Projection, g: &GraphChange, edge_exists: bool) -> Plan {
    let mut plan = Plan::default();
    let since = encode_i64(g.time_ms);
    let (a, b) = (g.actor, g.subject);
    let (m, bumps) = (&mut plan.visible, &mut plan.bumps);
    let mut bump = |kind| bumps.push(fver::Bump { p, owner: a, kind });
    match (g.op, edge_exists) {
        (GraphOp::Follow, false) => {
            m.push(Mutation::Set {
                key: graph::edge(p, Edge::Follower, b, a),
                value: since.clone(),
            });
            m.push(Mutation::Set {
                key: graph::edge(p, Edge::Following, a, b),
                value: since,
            });
            m.push(Mutation::Add {
                key: graph::count(p, b, Count::Followers),
                delta: 1,
            });
            m.push(Mutation::Add {
                key: graph::count(p, a, Count::Following),
                delta: 1,
            });
            bump(FeedKind::Home);
        }
        (GraphOp::Unfollow, true) => {
            m.push(Mutation::Clear {
                key: graph::edge(p, Edge::Follower, b, a),
            });
            m.push(Mutation::Clear {
                key: graph::edge(p, Edge::Following, a, b),
            });
            m.push(Mutation::Add {
                key: graph::count(p, b, Count::Followers),
                delta: -1,
            });
            m.push(Mutation::Add {
                key: graph::count(p, a, Count::Following),
                delta: -1,
            });
            bump(FeedKind::Home);
        }
        (GraphOp::Block, false) | (GraphOp::Mute, false) => {
            let (set, count) = if g.op == GraphOp::Block {
                (Edge::Block, Count::Blocking)
            } else {
                (Edge::Mute, Count::Muting)
            };
            m.push(Mutation::Set {
                key: graph::edge(p, set, a, b),
                value: since,
            });
            m.push(Mutation::Add {
                key: graph::count(p, a, count),
                delta: 1,
            });
            for kind in FeedKind::ALL {
                bump(kind);
            }
        }
        (GraphOp::Unblock, true) | (GraphOp::Unmute, true) => {
            let (set, count) = if g.op == GraphOp::Unblock {
                (Edge::Block, Count::Blocking)
            } else {
                (Edge::Mute, Count::Muting)
            };
            m.push(Mutation::Clear {
                key: graph::edge(p, set, a, b),
            });
            m.push(Mutation::Add {
                key: graph::count(p, a, count),
                delta: -1,
            });
            for kind in FeedKind::ALL {
                bump(kind);
            }
        }
        _ => {}
    }
    plan
}

/// Plans copying a followee's recent items into a new follower's home feed (follow
/// backfill). `items` are positions and entries read from the followee's user feed.
pub fn plan_backfill(p: Projection, follower: UserId, items: &[(Position, FeedEntry)]) -> Plan {
    let mut plan = Plan::default();
    for (pos, e) in items {
        let entry = FeedEntry {
            reason: Reason::Follow,
            ..e.clone()
        };
        plan.blind.push(Mutation::Set {
            key: feed::key(p, follower, FeedKind::Home, *pos),
            value: entry.encode(),
        });
        plan.entries += 1;
    }
    if !items.is_empty() {
        plan.bump(p, follower, FeedKind::Home);
    }
    plan
}

#[cfg(test)]
#[path = "fanout_tests.rs"]
mod tests;
