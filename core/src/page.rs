//! Feed pages: index entries + bodies → what a reader sees.
//!
//! The query service reads a feed newest first (a forward range past the [`Cursor`]), fetches
//! the bodies in one multi-get, loads the reader's relations to the page's actors into a
//! [`Visibility`], and calls [`assemble`]. Assembly filters at read time — retracted bodies,
//! actors the reader unfollowed, blocked or muted never show, even before background cleanup
//! ran — then groups items by the configured [`AggregationRule`]s ("alice, bob and 3 others
//! liked your post"; "carol posted 5 photos"). Aggregation happens here, at read time, so a rule
//! change applies to old items too.
//!
//! Cursors are opaque to clients: the base64url of a position `(time_ms, id)`. Paging by
//! position (not by count) keeps pages stable while new items arrive at the head.

use std::collections::{BTreeMap, HashMap, HashSet};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::event::{Activity, EventId, UserId};
use crate::keys::feed::{FeedEntry, FeedKind, Position, Reason};

/// A page position handed to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(pub Position);

/// A cursor a client sent that this build cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor: {0}; pass the `next_cursor` of a previous page unchanged, or omit it for the first page")]
pub struct CursorError(&'static str);

const CURSOR_V1: u8 = 1;

impl Cursor {
    /// Encodes as URL-safe base64 without padding.
    pub fn encode(&self) -> String {
        let mut b = Vec::with_capacity(25);
        b.push(CURSOR_V1);
        b.extend_from_slice(&self.0.time_ms.to_be_bytes());
        b.extend_from_slice(self.0.id.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    /// Decodes [`Cursor::encode`].
    pub fn decode(s: &str) -> Result<Cursor, CursorError> {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| CursorError("not base64url"))?;
        if b.len() != 25 || b[0] != CURSOR_V1 {
            return Err(CursorError("unknown cursor version or length"));
        }
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[1..9]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[9..25]);
        Ok(Cursor(Position {
            time_ms: i64::from_be_bytes(t),
            id: EventId::from_bytes(id),
        }))
    }
}

/// The reader's relations to the actors on a page, loaded by the query service.
#[derive(Clone, Debug, Default)]
pub struct Visibility {
    /// Who reads.
    pub viewer: UserId,
    /// Actors the viewer follows now.
    pub following: HashSet<UserId>,
    /// Actors the viewer blocked.
    pub blocked: HashSet<UserId>,
    /// Actors the viewer muted.
    pub muted: HashSet<UserId>,
}

impl Visibility {
    /// Whether an entry of feed `kind` with this entry value may be shown.
    pub fn shows(&self, kind: FeedKind, e: &FeedEntry) -> bool {
        if e.actor == self.viewer {
            return true;
        }
        if self.blocked.contains(&e.actor) {
            return false;
        }
        match kind {
            FeedKind::Home => {
                !self.muted.contains(&e.actor)
                    && (e.reason != Reason::Follow || self.following.contains(&e.actor))
            }
            FeedKind::Notifications => !self.muted.contains(&e.actor),
            FeedKind::User => true,
        }
    }
}

/// How items are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Same verb on the same object: "alice, bob and 3 others liked your post".
    VerbObject,
    /// Same actor, same verb, all within the rule's `window_ms` of the group's newest item:
    /// "carol posted 5 photos".
    VerbActor,
}

fn default_window_ms() -> i64 {
    3_600_000
}

/// One aggregation rule; the first rule whose verbs match an item decides its group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationRule {
    /// Name shown in group objects, e.g. `likes`.
    pub name: String,
    /// Verbs the rule applies to; empty means every verb.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Feeds the rule applies to; empty means every feed.
    #[serde(default)]
    pub feeds: Vec<FeedKind>,
    /// How it groups: `verb_object` or `verb_actor`.
    pub by: GroupBy,
    /// For `verb_actor`: largest time span of one group, in ms (default one hour).
    #[serde(default = "default_window_ms")]
    pub window_ms: i64,
}

impl AggregationRule {
    fn applies(&self, kind: FeedKind, verb: &str) -> bool {
        (self.feeds.is_empty() || self.feeds.contains(&kind))
            && (self.verbs.is_empty() || self.verbs.iter().any(|v| v == verb))
    }
}

/// The default rules: likes and shares grouped by object; posts grouped by actor per hour.
pub fn default_rules() -> Vec<AggregationRule> {
    vec![
        AggregationRule {
            name: "reactions".into(),
            verbs: vec!["like".into(), "share".into()],
            feeds: vec![],
            by: GroupBy::VerbObject,
            window_ms: default_window_ms(),
        },
        AggregationRule {
            name: "bursts".into(),
            verbs: vec!["post".into()],
            feeds: vec![],
            by: GroupBy::VerbActor,
            window_ms: 3_600_000,
        },
    ]
}

/// One activity as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Activity id.
    pub id: EventId,
    /// Who.
    pub actor: UserId,
    /// Did what.
    pub verb: String,
    /// To what.
    pub object: String,
    /// Where.
    pub target: Option<String>,
    /// When (ms).
    pub time_ms: i64,
    /// Text.
    pub text: String,
    /// Extra attributes.
    pub attributes: BTreeMap<String, String>,
    /// Why it is in this feed.
    pub reason: Reason,
}

/// Several activities shown as one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    /// The rule that formed it.
    pub rule: String,
    /// The common verb.
    pub verb: String,
    /// The common object (verb+object groups).
    pub object: Option<String>,
    /// Distinct actors, newest first.
    pub actors: Vec<UserId>,
    /// Number of activities.
    pub count: usize,
    /// Newest member's time.
    pub newest_time_ms: i64,
    /// Oldest member's time.
    pub oldest_time_ms: i64,
    /// Member ids, newest first.
    pub activity_ids: Vec<EventId>,
    /// Human summary, e.g. "user 1, user 2 and 3 others liked post:9".
    pub summary: String,
}

/// An entry of a page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PageEntry {
    /// A single activity.
    Item(Item),
    /// An aggregate.
    Group(Group),
}

/// One page of a feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Page {
    /// Entries, newest first.
    pub entries: Vec<PageEntry>,
    /// Pass back for the next page; `None` at the end of the feed.
    pub next_cursor: Option<String>,
}

/// One scanned index entry with its body (`None`: missing or retracted).
#[derive(Clone, Debug)]
pub struct Scanned {
    /// Where it is.
    pub pos: Position,
    /// The index value.
    pub entry: FeedEntry,
    /// The decoded body.
    pub body: Option<Activity>,
}

/// Builds a page from entries scanned newest first. `more` says whether the scan stopped
/// before the end of the feed. At most `limit` activities are taken (a group counts each of
/// its members); hidden entries are skipped but still advance the cursor.
pub fn assemble(
    kind: FeedKind,
    scanned: &[Scanned],
    more: bool,
    vis: &Visibility,
    rules: &[AggregationRule],
    aggregate: bool,
    limit: usize,
) -> Page {
    let mut shown = Vec::new();
    let mut last: Option<Position> = None;
    let mut full = false;
    for s in scanned {
        if shown.len() == limit {
            full = true;
            break;
        }
        last = Some(s.pos);
        let Some(body) = &s.body else { continue };
        if !vis.shows(kind, &s.entry) {
            continue;
        }
        shown.push(item(s, body));
    }
    let next_cursor = if full || more {
        last.map(|p| Cursor(p).encode())
    } else {
        None
    };
    let entries = if aggregate {
        group(kind, shown, rules)
    } else {
        shown.into_iter().map(PageEntry::Item).collect()
    };
    Page {
        entries,
        next_cursor,
    }
}

fn item(s: &Scanned, body: &Activity) -> Item {
    Item {
        id: body.id,
        actor: body.actor,
        verb: body.verb.clone(),
        object: body.object.clone(),
        target: body.target.clone(),
        time_ms: s.pos.time_ms,
        text: body.text.clone(),
        attributes: body.attributes.clone(),
        reason: s.entry.reason,
    }
}

/// Groups items (newest first) by the first matching rule. Groups take the place of their
/// newest member; groups of one stay plain items.
pub fn group(kind: FeedKind, items: Vec<Item>, rules: &[AggregationRule]) -> Vec<PageEntry> {
    #[derive(PartialEq, Eq, Hash)]
    enum Key {
        Object(usize, String, String),
        Actor(usize, String, UserId),
    }
    let mut slots: Vec<Vec<Item>> = Vec::new();
    let mut rule_of: Vec<Option<usize>> = Vec::new();
    let mut open: HashMap<Key, usize> = HashMap::new();
    for it in items {
        let rule = rules.iter().position(|r| r.applies(kind, &it.verb));
        let key = rule.map(|r| match rules[r].by {
            GroupBy::VerbObject => Key::Object(r, it.verb.clone(), it.object.clone()),
            GroupBy::VerbActor => Key::Actor(r, it.verb.clone(), it.actor),
        });
        let joined = key
            .as_ref()
            .and_then(|k| open.get(k).copied())
            .filter(|slot| match rule.map(|r| &rules[r]) {
                Some(r) if r.by == GroupBy::VerbActor => {
                    slots[*slot][0].time_ms - it.time_ms <= r.window_ms
                }
                _ => true,
            });
        match joined {
            Some(slot) => slots[slot].push(it),
            None => {
                if let Some(k) = key {
                    open.insert(k, slots.len());
                }
                rule_of.push(rule);
                slots.push(vec![it]);
            }
        }
    }
    slots
        .into_iter()
        .zip(rule_of)
        .map(|(mut members, rule)| match (members.len(), rule) {
            (1, _) | (_, None) => PageEntry::Item(members.remove(0)),
            (_, Some(r)) => PageEntry::Group(make_group(&rules[r], members)),
        })
        .collect()
}

fn make_group(rule: &AggregationRule, members: Vec<Item>) -> Group {
    let mut actors = Vec::new();
    for m in &members {
        if !actors.contains(&m.actor) {
            actors.push(m.actor);
        }
    }
    let first = &members[0];
    let object = (rule.by == GroupBy::VerbObject).then(|| first.object.clone());
    let summary = summarize(&actors, &first.verb, object.as_deref(), members.len());
    Group {
        rule: rule.name.clone(),
        verb: first.verb.clone(),
        object,
        count: members.len(),
        newest_time_ms: first.time_ms,
        oldest_time_ms: members.last().map_or(first.time_ms, |m| m.time_ms),
        activity_ids: members.iter().map(|m| m.id).collect(),
        actors,
        summary,
    }
}

fn past(verb: &str) -> String {
    if verb.ends_with('e') {
        format!("{verb}d")
    } else {
        format!("{verb}ed")
    }
}

/// "user 1, user 2 and 3 others liked post:9" / "user 4 posted 5 times".
pub fn summarize(actors: &[UserId], verb: &str, object: Option<&str>, count: usize) -> String {
    let name = |u: &UserId| format!("user {u}");
    let who = match actors {
        [] => String::new(),
        [a] => name(a),
        [a, b] => format!("{} and {}", name(a), name(b)),
        [a, b, rest @ ..] => format!(
            "{}, {} and {} other{}",
            name(a),
            name(b),
            rest.len(),
            if rest.len() == 1 { "" } else { "s" }
        ),
    };
    match object {
        Some(o) => format!("{who} {} {o}", past(verb)),
        None => format!("{who} {} {count} times", past(verb)),
    }
}

#[cfg(test)]
#[path = "page_tests.rs"]
mod tests;
