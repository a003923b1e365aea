//! Projection: one decoded event → the store batches that apply it.
//!
//! [`Projector::plan`] reads what an event depends on (graph counts and followers, the body a
//! retraction or update refers to, the edge a graph change flips, the fan-out cursor) from one
//! read view and returns a [`Step`]: the mutations of one batch and, for a fan-out too large for
//! one batch, the cursor to continue from. The caller commits each step — in the consume loop
//! together with its offset — and calls again while [`Step::resume`] is set.
//!
//! Everything written derives from the event, so applying an event twice rewrites the same
//! index and message keys (feed-version counters, being cache validators, may move again).
//! One run-time switch shapes a plan: an activity whose `fanout.<verb>` is marked down
//! ([`Projector::control`]) is not pushed to followers.

use std::sync::Arc;

use tidings_core::control::Control;
use tidings_core::event::{Activity, Event, GraphChange, GraphOp, Retraction, Update};
use tidings_core::fanout::{self, FanoutConfig, FanoutOptions, GraphView, Placement, Plan};
use tidings_core::keys::fanout::{Cursor, Owner};
use tidings_core::keys::feed::{self, FeedEntry, FeedKind};
use tidings_core::keys::messages::{self, MessageValue};
use tidings_core::keys::{self, pull, Projection};
use tidings_core::UserId;
use tidings_store::{RangeOptions, ReadView, Store, WriteBatch};

use crate::graph::{FollowerMemo, StoreGraph};

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The store failed; retry the batch (nothing of it was written).
    #[error(transparent)]
    Store(#[from] tidings_store::Error),
    /// The event is well-formed but not allowed (e.g. retracting someone else's activity):
    /// send it to the dead letter topic with this reason.
    #[error("rejected: {0}")]
    Rejected(String),
}

/// The writes of one batch for one event.
#[derive(Debug, Default)]
pub struct Step {
    /// The plan of this step.
    pub plan: Plan,
    /// A note for logs when the event changed nothing (e.g. retracting an unknown id).
    pub noop: Option<&'static str>,
    /// The activity was not pushed to followers because its `fanout.<verb>` is marked down.
    pub unpushed: bool,
}

impl Step {
    /// The cursor to call [`Projector::plan`] again with, if the event needs more batches.
    pub fn resume(&self) -> Option<UserId> {
        self.plan.resume
    }
}

/// Turns events into store writes for projection `p`.
#[derive(Debug, Clone)]
pub struct Projector {
    /// The projection written.
    pub projection: Projection,
    /// Fan-out tunables.
    pub fanout: FanoutConfig,
    /// Recent items of a followee copied into a new follower's home feed.
    pub backfill: usize,
    /// Run-time switches: activities whose `fanout.<verb>` is marked down are applied without
    /// pushing to followers (see [`tidings_core::control`]). Nothing is down by default, and
    /// rebuilds, restores and verify always use the default.
    pub control: Arc<Control>,
}

impl Projector {
    /// A projector for projection `p` with default tunables.
    pub fn new(p: Projection) -> Self {
        Projector {
            projection: p,
            fanout: FanoutConfig::default(),
            backfill: 100,
            control: Arc::default(),
        }
    }

    /// The stored fan-out cursor of an event, if a previous run of this event left one. An
    /// activity and its retraction share the cursor key (the activity's id): a cursor another
    /// event left (the activity's own fan-out, seen by another user's retraction of it, or a
    /// removal seen by an event reusing the id) is not resumed, so that event is judged from
    /// the start (and, for the stolen retraction, rejected) without touching the cursor.
    pub fn stored_resume(
        &self,
        view: &dyn ReadView,
        event: &Event,
    ) -> Result<Option<UserId>, ProjectError> {
        let (id, wants) = match event {
            Event::Activity(a) => (a.id, Owner::Fanout(a.actor)),
            Event::Retraction(r) => (r.activity_id, Owner::Removal(r.actor)),
            _ => return Ok(None),
        };
        let Some(v) = view.get(&keys::fanout::key(self.projection, id))? else {
            return Ok(None);
        };
        let Some(cursor) = Cursor::decode(&v) else {
            return Err(ProjectError::Rejected(format!(
                "the fan-out cursor of {id} cannot be decoded ({} bytes)",
                v.len()
            )));
        };
        if !cursor.belongs_to(wants) {
            tracing::debug!(%id, owner = ?cursor.owner, event = ?wants, "a fan-out cursor of another event: not resumed");
            return Ok(None);
        }
        Ok(Some(cursor.last))
    }

    /// Plans one step of `event`. `body` is the event's encoded record (stored as the message
    /// body of an activity); `resume` continues a split fan-out.
    pub fn plan(
        &self,
        view: &dyn ReadView,
        event: &Event,
        body: &[u8],
        resume: Option<UserId>,
    ) -> Result<Step, ProjectError> {
        self.plan_with(view, event, body, &FanoutOptions::default(), resume)
    }

    /// [`Projector::plan`] with the fan-out options the processor chain chose for the event
    /// (which feeds an activity goes to; whether blockers and muters are skipped). Give the
    /// same options to every step of one event.
    pub fn plan_with(
        &self,
        view: &dyn ReadView,
        event: &Event,
        body: &[u8],
        opts: &FanoutOptions,
        resume: Option<UserId>,
    ) -> Result<Step, ProjectError> {
        self.plan_memo(view, None, event, body, opts, resume)
    }

    /// [`Projector::plan_with`] reading follower counts and lists through `memo` (a bulk run;
    /// see [`FollowerMemo`] for what keeps it true).
    pub fn plan_memo(
        &self,
        view: &dyn ReadView,
        memo: Option<&FollowerMemo>,
        event: &Event,
        body: &[u8],
        opts: &FanoutOptions,
        resume: Option<UserId>,
    ) -> Result<Step, ProjectError> {
        let graph = StoreGraph::with_memo(view, self.projection, memo);
        match event {
            Event::Activity(a) => self.activity(view, &graph, a, body, opts, resume),
            Event::Retraction(r) => self.retraction(view, &graph, r, resume),
            Event::Update(u) => self.update(view, u),
            Event::Graph(g) => self.graph(view, &graph, g),
        }
    }

    /// Applies `event` completely, one committed batch per step (no offsets: for tools and
    /// tests; the consume loop commits steps with its offsets instead).
    pub fn apply(
        &self,
        store: &dyn Store,
        event: &Event,
        body: &[u8],
    ) -> Result<u64, ProjectError> {
        let mut resume = self.stored_resume(&*store.snapshot()?, event)?;
        let mut entries = 0;
        loop {
            let step = self.plan(&*store.snapshot()?, event, body, resume)?;
            entries += step.plan.entries;
            resume = step.resume();
            let mut batch = WriteBatch::new();
            batch.extend(step.plan.writes());
            store.commit(batch)?;
            if resume.is_none() {
                return Ok(entries);
            }
        }
    }

    fn activity(
        &self,
        view: &dyn ReadView,
        graph: &StoreGraph<'_>,
        a: &Activity,
        body: &[u8],
        opts: &FanoutOptions,
        resume: Option<UserId>,
    ) -> Result<Step, ProjectError> {
        if resume.is_none() {
            if let Some(old) = view.get(&messages::key(self.projection, a.id))? {
                if matches!(MessageValue::parse(&old), MessageValue::Retracted { .. }) {
                    return Ok(Step {
                        plan: Plan::default(),
                        noop: Some("activity was already retracted"),
                        unpushed: false,
                    });
                }
            }
        }
        // Decided once, at the event's first step: a fan-out already split over batches
        // finishes as it started.
        let unpushed = resume.is_none() && self.control.fanout_down(&a.verb);
        let mut opts = *opts;
        if unpushed {
            // Everything the pushed plan writes but the followers' home entries, in one step.
            tracing::debug!(id = %a.id, verb = %a.verb, "fan-out of this verb is marked down: not pushed to followers");
            opts.targets.followers = false;
        }
        let mut plan = fanout::plan_activity(
            self.projection,
            a,
            body.to_vec(),
            graph,
            &self.fanout,
            &opts,
            resume,
        )?;
        // Not pushed (hybrid): make sure readers pull this author.
        if resume.is_none()
            && graph.follower_count(a.actor)? > self.fanout.hybrid_threshold
            && view.get(&pull::key(self.projection, a.actor))?.is_none()
        {
            plan.visible.extend(pull::add(self.projection, a.actor));
        }
        Ok(Step {
            plan,
            noop: None,
            unpushed,
        })
    }

    /// The stored activity `id`, or why there is none.
    fn stored_activity(
        &self,
        view: &dyn ReadView,
        id: tidings_core::EventId,
    ) -> Result<Result<Activity, &'static str>, ProjectError> {
        let Some(raw) = view.get(&messages::key(self.projection, id))? else {
            return Ok(Err("unknown activity"));
        };
        match MessageValue::parse(&raw) {
            MessageValue::Retracted { .. } => Ok(Err("activity already retracted")),
            MessageValue::Body(b) => match tidings_schemas::decode(b) {
                Ok(Event::Activity(a)) => Ok(Ok(a)),
                Ok(_) => Ok(Err("stored body is not an activity")),
                Err(e) => Err(ProjectError::Rejected(format!(
                    "stored body of {id} cannot be decoded: {e}"
                ))),
            },
        }
    }

    fn retraction(
        &self,
        view: &dyn ReadView,
        graph: &StoreGraph<'_>,
        r: &Retraction,
        resume: Option<UserId>,
    ) -> Result<Step, ProjectError> {
        let original = if resume.is_some() {
            // Mid-way through removing a large fan-out the body is already a tombstone: the
            // first step saved the placement beside the cursor.
            None
        } else {
            Some(self.stored_activity(view, r.activity_id)?)
        };
        let a = match original {
            Some(Ok(a)) => a,
            Some(Err(why)) => {
                return Ok(Step {
                    plan: Plan::default(),
                    noop: Some(why),
                    unpushed: false,
                })
            }
            None => {
                return self.retraction_resume(view, graph, r, resume);
            }
        };
        if a.actor != r.actor {
            return Err(ProjectError::Rejected(format!(
                "user {} cannot retract activity {} of user {}",
                r.actor, a.id, a.actor
            )));
        }
        let place = Placement::from(&a);
        let mut plan =
            fanout::plan_retraction(self.projection, r, &place, graph, &self.fanout, None)?;
        if plan.resume.is_some() {
            // Remember where the activity sat, so a resumed removal can find the entries.
            plan.visible.push(tidings_core::Mutation::Set {
                key: keys::fanout::placement(self.projection, r.activity_id),
                value: place.encode(),
            });
        }
        Ok(Step {
            plan,
            ..Step::default()
        })
    }

    fn retraction_resume(
        &self,
        view: &dyn ReadView,
        graph: &StoreGraph<'_>,
        r: &Retraction,
        resume: Option<UserId>,
    ) -> Result<Step, ProjectError> {
        let key = keys::fanout::placement(self.projection, r.activity_id);
        let Some(place) = view
            .get(&key)?
            .and_then(|v| Placement::decode(r.activity_id, &v))
        else {
            return Ok(Step {
                plan: Plan::default(),
                noop: Some("retraction progress lost its placement"),
                unpushed: false,
            });
        };
        let mut plan =
            fanout::plan_retraction(self.projection, r, &place, graph, &self.fanout, resume)?;
        if plan.resume.is_none() {
            plan.visible.push(tidings_core::Mutation::Clear { key });
        }
        Ok(Step {
            plan,
            ..Step::default()
        })
    }

    fn update(&self, view: &dyn ReadView, u: &Update) -> Result<Step, ProjectError> {
        let mut a = match self.stored_activity(view, u.activity_id)? {
            Ok(a) => a,
            Err(why) => {
                return Ok(Step {
                    plan: Plan::default(),
                    noop: Some(why),
                    unpushed: false,
                })
            }
        };
        if a.actor != u.actor {
            return Err(ProjectError::Rejected(format!(
                "user {} cannot update activity {} of user {}",
                u.actor, a.id, a.actor
            )));
        }
        if let Some(t) = &u.text {
            a.text = t.clone();
        }
        a.attributes.extend(u.attributes.clone());
        let body = tidings_schemas::encode(&Event::Activity(a));
        Ok(Step {
            plan: fanout::plan_update(self.projection, u.activity_id, body),
            ..Step::default()
        })
    }

    fn graph(
        &self,
        view: &dyn ReadView,
        graph: &StoreGraph<'_>,
        g: &GraphChange,
    ) -> Result<Step, ProjectError> {
        let exists = view
            .get(&fanout::graph_edge_key(self.projection, g))?
            .is_some();
        let mut plan = fanout::plan_graph(self.projection, g, exists);
        let new_follow = g.op == GraphOp::Follow && !exists;
        let pulled = new_follow && graph.follower_count(g.subject)? >= self.fanout.hybrid_threshold;
        if pulled && view.get(&pull::key(self.projection, g.subject))?.is_none() {
            // Above the threshold with this follow: the new follower gets no backfill and the
            // subject's next posts are not pushed, so readers must pull the subject from now on
            // (even if none of their posts has been applied since they crossed it).
            plan.visible.extend(pull::add(self.projection, g.subject));
        }
        if new_follow && !pulled && self.backfill > 0 {
            let sub = feed::feed(self.projection, g.subject, FeedKind::User);
            let (b, e) = sub.range();
            let rows = view.range(&b, &e, RangeOptions::forward(self.backfill))?;
            let items: Vec<_> = rows
                .iter()
                .filter_map(|(k, v)| Some((feed::parse_key(&sub, k)?, FeedEntry::decode(v)?)))
                .collect();
            plan.absorb(fanout::plan_backfill(self.projection, g.actor, &items));
        }
        Ok(Step {
            plan,
            ..Step::default()
        })
    }
}
