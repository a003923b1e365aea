//! Processors that shape an activity's fan-out and never stop it: `mentions`, `route`,
//! `block_mute_filter`. Pure functions of the event, so a resumed split fan-out gets the same
//! result again.
//!
//! ```toml
//! [[pipeline.processor]]
//! id = "mentions"
//! kind = "mentions"
//! max_mentions = 10           # at most this many users added per activity (default 10)
//!
//! [[pipeline.processor]]
//! id = "likes-notify-only"
//! kind = "route"
//! verbs = ["like"]
//! targets = ["notifications"] # of: followers, user, notifications
//!
//! [[pipeline.processor]]
//! id = "respect-blocks"
//! kind = "block_mute_filter"
//! mutes = true                # also skip followers who mute the actor (default false)
//! notifications = true        # skip recipients who block the actor (default true)
//! verbs = ["post"]            # only these verbs (default: every activity)
//! ```
//!
//! **mentions**: every `@<user id>` token in the text (the `@` at the start or after a
//! character that is not a letter or digit, the digits ending at one that is neither) adds that
//! user to `to`, so they get a notification; the actor, users already in `to`, and mentions
//! past `max_mentions` (or past the schema's 256 recipients) are left out. The event changes, so
//! the consumers store the re-encoded body (retractions find notifications through the stored
//! body's `to`). Matches when it added someone.
//!
//! **route**: activities with one of `verbs` go only to `targets`: `followers` (their home
//! feeds), `user` (the actor's own user and home feeds), `notifications` (the recipients in
//! `to`). A later `route` matching the same verb wins. Matches when the verb is listed. Note:
//! followers of an author above the hybrid threshold read that author's user feed at read time,
//! so for such authors `user` without `followers` still reaches them.
//!
//! **block_mute_filter**: at fan-out, followers who block the actor (and with `mutes`, who mute
//! them) get no home entry, and (with `notifications`) recipients who block the actor no
//! notification; one multi-get of the edges per fan-out step. Readers already hide such items
//! at read time; this keeps them out of the index. Matches when it applies.

use serde::Deserialize;

use super::config::{check_verbs, config_error, EmitConfig};
use super::{Ctx, Decision, Flow, ProcessError, Processor};
use crate::event::{Event, UserId};
use crate::fanout::Targets;

/// `kind = "mentions"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MentionsConfig {
    /// The processor's id.
    pub id: String,
    /// Side output when mentions were added.
    pub emit: Option<EmitConfig>,
    /// Most users added per activity.
    #[serde(default = "default_max_mentions")]
    pub max_mentions: usize,
}

fn default_max_mentions() -> usize {
    10
}

/// A feed an activity can go to (`route`'s `targets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The followers' home feeds.
    Followers,
    /// The actor's own user and home feeds.
    User,
    /// The recipients' notification feeds.
    Notifications,
}

/// `kind = "route"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The processor's id.
    pub id: String,
    /// Side output for every routed activity.
    pub emit: Option<EmitConfig>,
    /// The activity verbs this route applies to.
    pub verbs: Vec<String>,
    /// Where they go (an empty list: nowhere but the message body).
    pub targets: Vec<Target>,
}

/// `kind = "block_mute_filter"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockMuteConfig {
    /// The processor's id.
    pub id: String,
    /// Side output for every activity it applies to.
    pub emit: Option<EmitConfig>,
    /// Also skip followers who mute the actor.
    #[serde(default)]
    pub mutes: bool,
    /// Skip recipients (`to`) who block the actor.
    #[serde(default = "yes")]
    pub notifications: bool,
    /// Only activities with these verbs (default: all).
    pub verbs: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

/// The user ids mentioned in `text` (`@123`), in order, without repeats.
pub fn mentioned(text: &str) -> Vec<UserId> {
    let b = text.as_bytes();
    let mut out: Vec<UserId> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = b[i] == b'@' && (i == 0 || !b[i - 1].is_ascii_alphanumeric());
        if !starts {
            i += 1;
            continue;
        }
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        let end = i + 1 + digits;
        let ends = b.get(end).is_none_or(|c| !c.is_ascii_alphanumeric());
        if digits > 0 && ends {
            if let Ok(u) = text[i + 1..end].parse::<UserId>() {
                if !out.contains(&u) {
                    out.push(u);
                }
            }
        }
        i = end.max(i + 1);
    }
    out
}

#[derive(Debug)]
pub(crate) struct Mentions {
    max: usize,
}

impl Mentions {
    pub(crate) fn new(c: &MentionsConfig) -> Result<Self, ProcessError> {
        if c.max_mentions == 0 {
            return Err(config_error(
                &c.id,
                "max_mentions must be at least 1 (remove the processor to turn mentions off)",
            ));
        }
        Ok(Mentions {
            max: c.max_mentions,
        })
    }
}

impl Processor for Mentions {
    fn process(&self, cx: &mut Ctx<'_>) -> Result<Decision, ProcessError> {
        let Event::Activity(a) = &mut cx.event else {
            return Ok(Decision::next());
        };
        let mut added = Vec::new();
        for u in mentioned(&a.text) {
            if added.len() >= self.max || a.to.len() >= crate::validate::MAX_RECIPIENTS {
                break;
            }
            if u != a.actor && !a.to.contains(&u) {
                a.to.push(u);
                added.push(u);
            }
        }
        if added.is_empty() {
            return Ok(Decision::next());
        }
        cx.changed = true;
        Ok(Decision::matched(
            Flow::Next,
            format!("notifies mentioned users {added:?}"),
        ))
    }
}

#[derive(Debug)]
pub(crate) struct Route {
    verbs: Vec<String>,
    targets: Targets,
    note: String,
}

impl Route {
    pub(crate) fn new(c: &RouteConfig) -> Result<Self, ProcessError> {
        if c.verbs.is_empty() {
            return Err(config_error(
                &c.id,
                "verbs = []: a route needs the verbs it applies to",
            ));
        }
        check_verbs(&c.id, "verbs", &c.verbs)?;
        let has = |t| c.targets.contains(&t);
        Ok(Route {
            verbs: c.verbs.clone(),
            targets: Targets {
                followers: has(Target::Followers),
                own: has(Target::User),
                notifications: has(Target::Notifications),
            },
            note: format!("routed to {:?}", c.targets).to_lowercase(),
        })
    }
}

impl Processor for Route {
    fn process(&self, cx: &mut Ctx<'_>) -> Result<Decision, ProcessError> {
        match &cx.event {
            Event::Activity(a) if self.verbs.contains(&a.verb) => {
                cx.fanout.targets = self.targets;
                Ok(Decision::matched(Flow::Next, self.note.clone()))
            }
            _ => Ok(Decision::next()),
        }
    }
}

#[derive(Debug)]
pub(crate) struct BlockMute(BlockMuteConfig);

impl BlockMute {
    pub(crate) fn new(c: &BlockMuteConfig) -> Result<Self, ProcessError> {
        if let Some(v) = &c.verbs {
            check_verbs(&c.id, "verbs", v)?;
        }
        Ok(BlockMute(c.clone()))
    }
}

impl Processor for BlockMute {
    fn process(&self, cx: &mut Ctx<'_>) -> Result<Decision, ProcessError> {
        let c = &self.0;
        match &cx.event {
            Event::Activity(a) if c.verbs.as_ref().is_none_or(|v| v.contains(&a.verb)) => {
                cx.fanout.skip_blocking_followers = true;
                cx.fanout.skip_muting_followers |= c.mutes;
                cx.fanout.skip_blocking_recipients |= c.notifications;
                let what = if c.mutes {
                    "blockers and muters"
                } else {
                    "blockers"
                };
                Ok(Decision::matched(
                    Flow::Next,
                    format!("skips {what} of the actor"),
                ))
            }
            _ => Ok(Decision::next()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mention_tokens() {
        assert_eq!(mentioned("hi @12 and @7, @12 again"), vec![12, 7]);
        assert_eq!(mentioned("@3"), vec![3]);
        assert_eq!(
            mentioned("mail bob@12 or @12x or @ 5 or @-4"),
            Vec::<UserId>::new()
        );
        assert_eq!(mentioned("(@5)@6 @99999999999999999999"), vec![5, 6]);
        assert_eq!(mentioned("é@8 ü"), vec![8]);
    }
}
