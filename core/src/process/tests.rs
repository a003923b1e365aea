#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::*;
use crate::event::{Activity, EventId, GraphChange, GraphOp, Producer};
use crate::fanout::Targets;
use crate::keys::procstate;

/// Processor state in memory, with FoundationDB semantics for the mutations chains write.
#[derive(Default)]
struct Mem(BTreeMap<Vec<u8>, Vec<u8>>);

impl StateView for Mem {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ProcessError> {
        Ok(self.0.get(key).cloned())
    }
    fn count(&self, begin: &[u8], end: &[u8], limit: usize) -> Result<usize, ProcessError> {
        Ok(self
            .0
            .range(begin.to_vec()..end.to_vec())
            .take(limit)
            .count())
    }
}

impl Mem {
    fn apply(&mut self, ms: &[Mutation]) {
        for m in ms {
            match m {
                Mutation::Set { key, value } => {
                    self.0.insert(key.clone(), value.clone());
                }
                Mutation::Clear { key } => {
                    self.0.remove(key);
                }
                Mutation::ClearRange { begin, end } => {
                    self.0.retain(|k, _| k < begin || k >= end);
                }
                Mutation::Add { .. } => panic!("processors write no counters"),
            }
        }
    }
}

fn chain(toml_text: &str) -> Chain {
    try_chain(toml_text).unwrap()
}

fn try_chain(toml_text: &str) -> Result<Chain, String> {
    #[derive(serde::Deserialize)]
    struct File {
        pipeline: PipelineConfig,
    }
    let f: File = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    Chain::build(&f.pipeline).map_err(|e| e.to_string())
}

fn id(n: u128) -> EventId {
    EventId(uuid::Uuid::from_u128(n))
}

fn act(n: u128, actor: i64, verb: &str, text: &str) -> Event {
    Event::Activity(Activity {
        id: id(n),
        actor,
        verb: verb.into(),
        object: format!("post:{n}"),
        target: None,
        time_ms: 1_000_000 + n as i64,
        to: vec![],
        text: text.into(),
        attributes: BTreeMap::new(),
        producer: Producer::new("posts-api", "1"),
    })
}

fn origin(offset: i64, timestamp_ms: i64) -> Origin {
    Origin {
        topic: "tidings.activities".into(),
        partition: 0,
        offset,
        timestamp_ms: Some(timestamp_ms),
    }
}

fn run(c: &Chain, e: &Event, o: &Origin, state: &dyn StateView) -> Run {
    c.run(
        1,
        Input {
            event: e,
            origin: o,
            resuming: false,
        },
        state,
    )
    .unwrap()
}

/// Runs `e` at log time `t` (offset `t`, partition 0) and applies its state writes.
fn step(c: &Chain, mem: &mut Mem, e: &Event, t: i64) -> Run {
    step_on(c, mem, e, 0, t)
}

const FLOWS: &str = r#"
[[pipeline.processor]]
id = "spam"
kind = "rule"
when = 'text.contains("buy now")'
then = "drop"
reason = "spam"

[[pipeline.processor]]
id = "staff"
kind = "rule"
when = 'producer == "staff-tools"'
then = "jump:route"

[[pipeline.processor]]
id = "quiet"
kind = "rule"
when = 'attributes.quiet == "yes"'
then = "term"

[[pipeline.processor]]
id = "audit"
kind = "rule"
when = 'verb == "share"'
emit = { topic = "audit", note = "a share" }

[[pipeline.processor]]
id = "route"
kind = "route"
verbs = ["like"]
targets = ["notifications"]
"#;

#[test]
fn each_flow_does_what_it_says() {
    let c = chain(FLOWS);
    assert_eq!(c.len(), 5);
    let o = origin(1, 1);

    let r = run(&c, &act(1, 1, "post", "buy now!"), &o, &EmptyState);
    assert_eq!(
        r.verdict,
        Verdict::Drop {
            by: "spam".into(),
            reason: "spam".into()
        }
    );
    assert_eq!(r.steps.len(), 1);

    let mut quiet = act(2, 1, "post", "shh");
    if let Event::Activity(a) = &mut quiet {
        a.attributes.insert("quiet".into(), "yes".into());
    }
    let r = run(&c, &quiet, &o, &EmptyState);
    assert_eq!(r.verdict, Verdict::Term { by: "quiet".into() });
    let flows: Vec<&str> = r.steps.iter().map(|s| s.flow.label()).collect();
    assert_eq!(flows, ["next", "next", "term"]);

    // The jump skips `quiet` and `audit`.
    if let Event::Activity(a) = &mut quiet {
        a.producer.name = "staff-tools".into();
    }
    let r = run(&c, &quiet, &o, &EmptyState);
    assert_eq!(r.verdict, Verdict::Project);
    let ran: Vec<(&str, &str)> = r
        .steps
        .iter()
        .map(|s| (s.processor.as_str(), s.flow.label()))
        .collect();
    assert_eq!(
        ran,
        [("spam", "next"), ("staff", "jump"), ("route", "next")]
    );
    assert_eq!(r.steps[1].flow, Flow::Jump("route".into()));

    // A side output changes nothing else.
    let share = act(3, 1, "share", "look");
    let r = run(&c, &share, &o, &EmptyState);
    assert_eq!(r.verdict, Verdict::Project);
    assert_eq!(r.fanout, FanoutOptions::default());
    assert_eq!(
        r.side_outputs,
        vec![SideOutput {
            processor: "audit".into(),
            topic: "audit".into(),
            format: Format::Json,
            note: "a share".into(),
            event: share.clone(),
            changed: false,
        }]
    );
    assert_eq!(r.steps[3].emitted, vec!["audit".to_string()]);

    // Routing narrows the fan-out of likes.
    let r = run(&c, &act(4, 1, "like", ""), &o, &EmptyState);
    assert_eq!(r.verdict, Verdict::Project);
    assert_eq!(
        r.fanout.targets,
        Targets {
            followers: false,
            own: false,
            notifications: true
        }
    );
    assert!(r.mutations.is_empty() && !r.changed);

    // An empty chain projects everything as it is.
    let r = run(&Chain::default(), &share, &o, &EmptyState);
    assert_eq!((r.verdict, r.event), (Verdict::Project, share));
}

#[test]
fn validate_sends_broken_rules_to_the_dead_letter_topic() {
    let c = chain(
        r#"
[[pipeline.processor]]
id = "fields"
kind = "validate"
verbs = ["post", "comment"]
max_text_bytes = 10
max_recipients = 1
require_target = ["comment"]
object_prefixes = ["post:"]
"#,
    );
    let code = |e: &Event| match run(&c, e, &origin(1, 1), &EmptyState).verdict {
        Verdict::DeadLetter { code, reason, by } => {
            assert_eq!(by, "fields");
            assert!(
                reason.starts_with("processor `fields`: field `"),
                "{reason}"
            );
            code
        }
        v => format!("{v:?}"),
    };
    assert_eq!(code(&act(1, 1, "post", "ok")), "Project");
    assert_eq!(code(&act(1, 1, "like", "ok")), "verb_not_allowed");
    assert_eq!(code(&act(1, 1, "post", "far too long")), "text_too_long");
    let mut e = act(1, 1, "post", "ok");
    if let Event::Activity(a) = &mut e {
        a.to = vec![2, 3];
    }
    assert_eq!(code(&e), "too_many_recipients");
    assert_eq!(code(&act(1, 1, "comment", "ok")), "target_required");
    if let Event::Activity(a) = &mut e {
        a.to.clear();
        a.object = "photo:1".into();
    }
    assert_eq!(code(&e), "object_not_allowed");
    let g = Event::Graph(GraphChange {
        id: id(9),
        actor: 1,
        subject: 2,
        op: GraphOp::Follow,
        time_ms: 1,
        producer: Producer::new("g", "1"),
    });
    assert_eq!(code(&g), "Project", "graph changes pass");
}

#[test]
fn dedupe_drops_a_republished_id_within_the_window_and_forgets_old_buckets() {
    let c = chain("[[pipeline.processor]]\nid = \"d\"\nkind = \"dedupe\"\nwindow_ms = 1000\n");
    let mut mem = Mem::default();
    let e = act(1, 1, "post", "x");
    assert_eq!(step(&c, &mut mem, &e, 10_000).verdict, Verdict::Project);
    // The same record again (a replay) is itself, not a duplicate.
    let r = run(&c, &e, &origin(10_000, 10_000), &mem);
    assert_eq!(r.verdict, Verdict::Project);
    // Re-published: another offset, within the window (the same bucket, then the next).
    let r = step(&c, &mut mem, &e, 10_999);
    assert_eq!(
        r.verdict,
        Verdict::Drop {
            by: "d".into(),
            reason: "duplicate".into()
        }
    );
    assert!(r.mutations.is_empty(), "a duplicate records nothing");
    assert_eq!(step(&c, &mut mem, &e, 11_900).verdict, r.verdict);
    // Another event passes.
    assert_eq!(
        step(&c, &mut mem, &act(2, 1, "post", "y"), 11_950).verdict,
        Verdict::Project
    );
    // Two windows later the bucket of the first is cleared, once.
    let r = step(&c, &mut mem, &act(3, 1, "post", "z"), 12_100);
    let scope = procstate::scope(1, "d", "tidings.activities", 0);
    assert_eq!(
        r.mutations.len(),
        3,
        "clear, cursor, record: {:?}",
        r.mutations
    );
    assert!(mem
        .get(&procstate::seen(&scope, 10, id(1)))
        .unwrap()
        .is_none());
    assert!(mem
        .get(&procstate::seen(&scope, 11, id(2)))
        .unwrap()
        .is_some());
    assert_eq!(step(&c, &mut mem, &e, 12_200).verdict, Verdict::Project);
    let r = step(&c, &mut mem, &act(4, 1, "post", "w"), 12_300);
    assert_eq!(r.mutations.len(), 1, "same bucket: only the record");
}

#[test]
fn rate_limit_holds_a_flooding_actor_to_its_limit() {
    let c = chain(
        r#"
[[pipeline.processor]]
id = "flood"
kind = "rate_limit"
max_events = 3
per_ms = 60000
verbs = ["post"]
"#,
    );
    let mut mem = Mem::default();
    let mut admitted = 0;
    for n in 0..10 {
        let r = step(&c, &mut mem, &act(n, 7, "post", "spam"), 600_000 + n as i64);
        match r.verdict {
            Verdict::Project => admitted += 1,
            Verdict::Drop { reason, .. } => assert_eq!(reason, "rate_limited"),
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(admitted, 3);
    // Others and other verbs are not held back.
    assert_eq!(
        step(&c, &mut mem, &act(20, 8, "post", "hi"), 600_100).verdict,
        Verdict::Project
    );
    assert_eq!(
        step(&c, &mut mem, &act(21, 7, "like", ""), 600_100).verdict,
        Verdict::Project
    );
    // An admitted event replayed is admitted again; the count does not grow.
    assert_eq!(
        step(&c, &mut mem, &act(0, 7, "post", "spam"), 600_000).verdict,
        Verdict::Project
    );
    // The next window admits again.
    assert_eq!(
        step(&c, &mut mem, &act(30, 7, "post", "x"), 660_000).verdict,
        Verdict::Project
    );

    let c = chain(
        "[[pipeline.processor]]\nid = \"f\"\nkind = \"rate_limit\"\nmax_events = 1\nper_ms = 1000\nexcess_topic = \"later\"\n",
    );
    let mut mem = Mem::default();
    let (excess, r) = admit_one_defer_the_next(&c, &mut mem);
    assert_eq!(r.side_outputs.len(), 1);
    let s = &r.side_outputs[0];
    assert_eq!(
        (s.topic.as_str(), s.format, &s.event),
        ("later", Format::Avro, &excess)
    );
}

/// Under a rate limit of 1 per second with an excess topic (processor `f`): user 7's first
/// post is admitted, the second (returned with its run) deferred.
fn admit_one_defer_the_next(c: &Chain, mem: &mut Mem) -> (Event, Run) {
    assert_eq!(
        step(c, mem, &act(1, 7, "post", "a"), 5_000).verdict,
        Verdict::Project
    );
    let excess = act(2, 7, "post", "b");
    let r = step(c, mem, &excess, 5_001);
    assert_eq!(
        r.verdict,
        Verdict::Drop {
            by: "f".into(),
            reason: "rate_limited_deferred".into()
        }
    );
    (excess, r)
}

/// Runs `e` from partition `partition` at log time `t` and applies its state writes.
fn step_on(c: &Chain, mem: &mut Mem, e: &Event, partition: i32, t: i64) -> Run {
    let o = Origin {
        partition,
        ..origin(t, t)
    };
    let r = run(c, e, &o, mem);
    mem.apply(&r.mutations);
    r
}

#[test]
fn late_events_count_and_partitions_keep_their_own_clocks() {
    let c = chain(
        "[[pipeline.processor]]\nid = \"f\"\nkind = \"rate_limit\"\nmax_events = 2\nper_ms = 1000\n",
    );
    let mut mem = Mem::default();
    // Partition 0 is at log time 50 s; partition 1 saw one event stamped far in the future.
    assert_eq!(
        step_on(&c, &mut mem, &act(1, 7, "post", "a"), 0, 50_000).verdict,
        Verdict::Project
    );
    assert_eq!(
        step_on(&c, &mut mem, &act(2, 9, "post", "b"), 1, 9_000_000).verdict,
        Verdict::Project
    );
    // Partition 1's clock cleared nothing of partition 0: user 7 has one slot left.
    assert_eq!(
        step_on(&c, &mut mem, &act(3, 7, "post", "c"), 0, 50_100).verdict,
        Verdict::Project
    );
    let over = step_on(&c, &mut mem, &act(4, 7, "post", "d"), 0, 50_200);
    assert!(matches!(over.verdict, Verdict::Drop { .. }), "{over:?}");
    // An event stamped long before the kept buckets is judged in the older kept one, not let
    // through against state already cleared: user 9 (partition 1) gets 2 there, then no more.
    for (n, want_admitted) in [(5, true), (6, true), (7, false)] {
        let r = step_on(&c, &mut mem, &act(n, 9, "post", "late"), 1, 1_000);
        assert_eq!(r.verdict == Verdict::Project, want_admitted, "{n}: {r:?}");
    }
    // Nothing was written below the kept buckets (bounded state).
    let kept = procstate::scope(1, "f", "tidings.activities", 1);
    let Mutation::ClearRange { begin, end } = procstate::clear_before(&kept, 8_999) else {
        panic!("a range clear")
    };
    assert_eq!(mem.0.range(begin..end).count(), 0);

    // Dedupe catches a copy stamped earlier than the first (the next bucket is checked too).
    let d = chain("[[pipeline.processor]]\nid = \"d\"\nkind = \"dedupe\"\nwindow_ms = 1000\n");
    let mut mem = Mem::default();
    let e = act(1, 1, "post", "x");
    assert_eq!(step(&d, &mut mem, &e, 20_100).verdict, Verdict::Project);
    assert!(matches!(
        step(&d, &mut mem, &e, 19_900).verdict,
        Verdict::Drop { .. }
    ));
}

#[test]
fn a_deferred_event_republished_is_not_its_own_duplicate() {
    let c = chain(
        r#"
[[pipeline.processor]]
id = "d"
kind = "dedupe"
window_ms = 600000

[[pipeline.processor]]
id = "f"
kind = "rate_limit"
max_events = 1
per_ms = 1000
excess_topic = "later"
"#,
    );
    let mut mem = Mem::default();
    let (excess, _) = admit_one_defer_the_next(&c, &mut mem);
    // Its re-publish, a window later (same id, another offset), is applied once.
    assert_eq!(step(&c, &mut mem, &excess, 7_000).verdict, Verdict::Project);
    let again = step(&c, &mut mem, &excess, 7_001);
    assert_eq!(
        again.verdict,
        Verdict::Drop {
            by: "d".into(),
            reason: "duplicate".into()
        }
    );
    // A plain drop still records the id: a re-publish of a dropped spam stays dropped.
    let c = chain(
        "[[pipeline.processor]]\nid = \"d\"\nkind = \"dedupe\"\nwindow_ms = 600000\n\n[[pipeline.processor]]\nid = \"f\"\nkind = \"rate_limit\"\nmax_events = 1\nper_ms = 1000\n",
    );
    let mut mem = Mem::default();
    step(&c, &mut mem, &act(1, 7, "post", "a"), 5_000);
    assert!(matches!(
        step(&c, &mut mem, &excess, 5_001).verdict,
        Verdict::Drop { reason, .. } if reason == "rate_limited"
    ));
    assert!(matches!(
        step(&c, &mut mem, &excess, 7_000).verdict,
        Verdict::Drop { reason, .. } if reason == "duplicate"
    ));
}

#[test]
fn mentions_notify_and_mark_the_event_changed() {
    let c = chain("[[pipeline.processor]]\nid = \"m\"\nkind = \"mentions\"\nmax_mentions = 2\n");
    let r = run(
        &c,
        &act(1, 1, "post", "hi @1 @5 @6 @7"),
        &origin(1, 1),
        &EmptyState,
    );
    let Event::Activity(a) = &r.event else {
        panic!()
    };
    assert_eq!(a.to, vec![5, 6], "not the actor, at most two");
    assert!(r.changed);
    let r = run(&c, &act(1, 1, "post", "no one"), &origin(1, 1), &EmptyState);
    assert!(!r.changed);
}

#[test]
fn block_mute_filter_sets_the_fanout_options() {
    let c = chain("[[pipeline.processor]]\nid = \"b\"\nkind = \"block_mute_filter\"\nmutes = true\nverbs = [\"post\"]\n");
    let r = run(&c, &act(1, 1, "post", ""), &origin(1, 1), &EmptyState);
    assert!(r.fanout.skip_blocking_followers && r.fanout.skip_muting_followers);
    assert!(r.fanout.skip_blocking_recipients);
    let r = run(&c, &act(1, 1, "like", ""), &origin(1, 1), &EmptyState);
    assert_eq!(r.fanout, FanoutOptions::default());
}

#[test]
fn a_resumed_fanout_is_not_decided_again() {
    let c = chain(
        r#"
[[pipeline.processor]]
id = "d"
kind = "dedupe"
window_ms = 1000
emit = { topic = "seen" }

[[pipeline.processor]]
id = "m"
kind = "mentions"

[[pipeline.processor]]
id = "drop-all"
kind = "rule"
when = "true"
then = "drop"
"#,
    );
    let mut mem = Mem::default();
    let e = act(1, 1, "post", "@4");
    step(&c, &mut mem, &act(1, 1, "post", "@4"), 10);
    let r = c
        .run(
            1,
            Input {
                event: &e,
                origin: &origin(99, 10),
                resuming: true,
            },
            &mem,
        )
        .unwrap();
    assert_eq!(r.verdict, Verdict::Project);
    assert!(r.mutations.is_empty() && r.side_outputs.is_empty());
    let Event::Activity(a) = &r.event else {
        panic!()
    };
    assert_eq!(a.to, vec![4], "transformations run again");
}

#[test]
fn bad_configs_are_refused_naming_the_processor() {
    let bad = |text: &str, want: &str| {
        let e = try_chain(text).map(|c| c.summary()).unwrap_err();
        assert!(e.contains(want), "{want:?} not in {e:?}");
    };
    let rule = |id: &str, extra: &str| {
        format!(
            "[[pipeline.processor]]\nid = \"{id}\"\nkind = \"rule\"\nwhen = \"true\"\n{extra}\n"
        )
    };
    bad(
        "[[pipeline.processor]]\nid = \"x\"\nkind = \"dedupe\"\nwindow = 5\n",
        "window",
    );
    bad(
        "[[pipeline.processor]]\nid = \"x\"\nkind = \"teleport\"\n",
        "teleport",
    );
    bad(
        &format!("{}{}", rule("a", ""), rule("a", "")),
        "processor `a`: this id is used",
    );
    bad(
        &format!("{}{}", rule("a", ""), rule("b", "then = \"jump:a\"")),
        "goes backward",
    );
    bad(&rule("a", "then = \"jump:a\""), "jump to itself");
    bad(
        &rule("a", "then = \"jump:zz\""),
        "no processor with that id",
    );
    bad(&rule("a", "then = \"explode\""), "expected next, term");
    bad(
        "[[pipeline.processor]]\nid = \"r1\"\nkind = \"rule\"\nwhen = \"verb ==\"\n",
        "processor `r1`: when: `verb ==` does not parse",
    );
    bad(
        "[[pipeline.processor]]\nid = \"x\"\nkind = \"dedupe\"\nwindow_ms = 0\n",
        "window_ms must be positive",
    );
    bad(&rule("a", "emit = { topic = \"bad topic\" }"), "emit.topic");
    bad(
        &rule("a", "emit = { topic = \"t\", colour = \"red\" }"),
        "colour",
    );
    bad(&rule("a b", ""), "id \"a b\"");
    bad(
        "[[pipeline.processor]]\nid = \"r\"\nkind = \"route\"\nverbs = [\"like\"]\ntargets = [\"everyone\"]\n",
        "everyone",
    );
    // Forward jumps are fine.
    let c = chain(&format!(
        "{}{}",
        rule("a", "then = \"jump:b\""),
        rule("b", "")
    ));
    assert_eq!(
        c.summary(),
        vec![("a".into(), "rule".into()), ("b".into(), "rule".into())]
    );
}

#[test]
fn topics_and_fingerprints() {
    let text = |max: u32| {
        format!(
            r#"
[[pipeline.processor]]
id = "f"
kind = "rate_limit"
max_events = {max}
per_ms = 1000
excess_topic = "later"
emit = {{ topic = "audit" }}

[[pipeline.processor]]
id = "r"
kind = "rule"
when = "true"
emit = {{ topic = "audit" }}
"#
        )
    };
    let (a, b, c) = (chain(&text(1)), chain(&text(1)), chain(&text(2)));
    assert_eq!(a.topics(), vec!["audit".to_string(), "later".to_string()]);
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_ne!(a.fingerprint(), c.fingerprint());
    assert_ne!(Chain::default().fingerprint(), a.fingerprint());
}
