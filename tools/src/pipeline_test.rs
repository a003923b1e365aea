//! `tidings pipeline test --config F --events FILE.jsonl`: dry-runs the processor chain of a
//! config file over recorded events and prints what each processor did, then a summary per
//! processor and outcome. Nothing is sent and no store is touched.
//!
//! Each line of the events file is either an event in its JSON form (`{"type": "activity",
//! "id": …, "actor": …}`, the serde form of `tidings_core::Event`) or a line printed by
//! `tidings replay` (`{topic, partition, offset, timestamp_ms, time, key, event}`), whose record
//! timestamp then is the log time the stateful processors use. Empty lines are skipped; a line
//! that is not one of those is reported with its number (and the command fails at the end).
//!
//! Every event goes the way the consumers take it: encoded and decoded through the Avro codec
//! with its validation (a failure is shown as the dead letter it would be), then the chain,
//! with processor state starting empty in an overlay over an empty view and growing event by
//! event, exactly as within one consumer batch.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tidings_consumers::chain::StoreState;
use tidings_core::fanout::FanoutOptions;
use tidings_core::process::{Input, Origin, Run, Verdict};
use tidings_core::Event;
use tidings_store::{KeyValue, Overlay, RangeOptions, ReadView};

use crate::config::Config;

/// `tidings pipeline …`
#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Dry-runs the processor chain of a config file over recorded events (JSON lines) and
    /// prints what each processor did.
    Test(TestArgs),
}

/// Flags of `tidings pipeline test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// The config file whose `[pipeline]` chain to run.
    #[arg(long, env = "TIDINGS_CONFIG")]
    config: PathBuf,
    /// Events, one JSON object per line (event JSON or `tidings replay` lines); `-` reads stdin.
    #[arg(long)]
    events: PathBuf,
    /// Print one JSON object per event and a final `{"summary": …}` line instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `tidings pipeline …`.
pub fn run(cmd: PipelineCommand) -> anyhow::Result<()> {
    match cmd {
        PipelineCommand::Test(args) => test(args),
    }
}

/// A view with nothing in it: the state a dry run starts from.
struct Empty;

impl ReadView for Empty {
    fn get(&self, _key: &[u8]) -> tidings_store::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    fn get_many(&self, keys: &[Vec<u8>]) -> tidings_store::Result<Vec<Option<Vec<u8>>>> {
        Ok(vec![None; keys.len()])
    }
    fn range(
        &self,
        _b: &[u8],
        _e: &[u8],
        _o: RangeOptions,
    ) -> tidings_store::Result<Vec<KeyValue>> {
        Ok(Vec::new())
    }
}

/// One parsed line: the event and where it came from.
fn parse_line(line: &str, number: usize) -> Result<(Event, Origin), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(event) = v.get("event").filter(|_| v.get("topic").is_some()) {
        let event: Event = serde_json::from_value(event.clone())
            .map_err(|e| format!("`event` of a replay line is not an event: {e}"))?;
        let origin = Origin {
            topic: v["topic"].as_str().unwrap_or("-").to_string(),
            partition: v["partition"].as_i64().unwrap_or(0) as i32,
            offset: v["offset"].as_i64().unwrap_or(number as i64),
            timestamp_ms: v["timestamp_ms"].as_i64(),
        };
        return Ok((event, origin));
    }
    let event: Event = serde_json::from_value(v).map_err(|e| {
        format!("neither an event (`type`: activity, retraction, update, graph) nor a `tidings replay` line: {e}")
    })?;
    Ok((
        event,
        Origin {
            topic: "-".into(),
            partition: 0,
            offset: number as i64,
            timestamp_ms: None,
        },
    ))
}

fn verdict_json(v: &Verdict) -> Value {
    match v {
        Verdict::Project => json!({"outcome": "project"}),
        Verdict::Term { by } => json!({"outcome": "term", "by": by}),
        Verdict::Drop { by, reason } => json!({"outcome": "drop", "by": by, "reason": reason}),
        Verdict::DeadLetter { by, code, reason } => {
            json!({"outcome": "dead_letter", "by": by, "code": code, "reason": reason})
        }
    }
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Project => "projected".into(),
        Verdict::Term { by } => format!("stopped by {by} (term): not projected"),
        Verdict::Drop { by, reason } => format!("dropped by {by}: {reason}"),
        Verdict::DeadLetter { by, code, reason } => {
            format!("dead letter from {by}: {code} ({reason})")
        }
    }
}

fn fanout_text(o: &FanoutOptions) -> Option<String> {
    if *o == FanoutOptions::default() {
        return None;
    }
    let t = o.targets;
    let to: Vec<&str> = [
        (t.followers, "followers"),
        (t.own, "user"),
        (t.notifications, "notifications"),
    ]
    .into_iter()
    .filter_map(|(on, n)| on.then_some(n))
    .collect();
    let mut s = format!("fan-out to [{}]", to.join(", "));
    if o.skip_blocking_followers {
        s.push_str("; skips followers who block the actor");
    }
    if o.skip_muting_followers {
        s.push_str(" or mute them");
    }
    if o.skip_blocking_recipients {
        s.push_str("; skips recipients who block the actor");
    }
    Some(s)
}

fn describe(e: &Event) -> String {
    match e {
        Event::Activity(a) => format!("user {} {} {}", a.actor, a.verb, a.object),
        Event::Retraction(r) => format!("user {} retracts {}", r.actor, r.activity_id),
        Event::Update(u) => format!("user {} updates {}", u.actor, u.activity_id),
        Event::Graph(g) => format!("user {} {} user {}", g.actor, g.op, g.subject),
    }
}

#[derive(Default)]
struct Summary {
    /// processor → (kind, outcome → count, side outputs).
    processors: BTreeMap<String, (String, BTreeMap<String, u64>, u64)>,
    order: Vec<String>,
    verdicts: BTreeMap<&'static str, u64>,
    bad_lines: Vec<usize>,
}

impl Summary {
    fn add(&mut self, run: &Run) {
        for s in &run.steps {
            if !self.processors.contains_key(&s.processor) {
                self.order.push(s.processor.clone());
            }
            let p = self
                .processors
                .entry(s.processor.clone())
                .or_insert_with(|| (s.kind.to_string(), BTreeMap::new(), 0));
            *p.1.entry(s.flow.label().to_string()).or_default() += 1;
            p.2 += s.emitted.len() as u64;
        }
    }

    fn verdict(&mut self, v: &'static str) {
        *self.verdicts.entry(v).or_default() += 1;
    }
}

fn test(args: TestArgs) -> anyhow::Result<()> {
    let chain = Config::chain(Some(&args.config))?;
    let reader: Box<dyn BufRead> = if args.events.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.events)
                .with_context(|| format!("opening the events file {}", args.events.display()))?,
        ))
    };
    let empty = Empty;
    let mut state = Overlay::new(&empty);
    let mut sum = Summary::default();
    let out = std::io::stdout();
    let mut out = out.lock();
    for (i, line) in reader.lines().enumerate() {
        let number = i + 1;
        let line = line.with_context(|| format!("reading line {number} of the events file"))?;
        if line.trim().is_empty() {
            continue;
        }
        let (event, origin) = match parse_line(&line, number) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("line {number}: {e}");
                sum.bad_lines.push(number);
                continue;
            }
        };
        // The consumers' path: the codec's decode and validation first.
        let event = match tidings_schemas::decode_and_validate(&tidings_schemas::encode(&event)) {
            Ok(e) => e,
            Err(e) => {
                sum.verdict("dead_letter");
                if args.json {
                    let v = json!({"line": number, "event_id": event.id().to_string(), "verdict": {"outcome": "dead_letter", "by": "decode", "code": e.reason_code(), "reason": e.to_string()}, "steps": []});
                    writeln!(out, "{v}")?;
                } else {
                    writeln!(
                        out,
                        "line {number}  {}  {}\n  ⇒ dead letter before the chain: {} ({e})\n",
                        event.id(),
                        describe(&event),
                        e.reason_code()
                    )?;
                }
                continue;
            }
        };
        let input = Input {
            event: &event,
            origin: &origin,
            resuming: false,
        };
        let run = chain
            .run(1, input, &StoreState(&state))
            .map_err(|e| anyhow::anyhow!("line {number}: {e}"))?;
        state.apply(&run.mutations);
        sum.add(&run);
        sum.verdict(match run.verdict {
            Verdict::Project => "projected",
            Verdict::Term { .. } => "terminated",
            Verdict::Drop { .. } => "dropped",
            Verdict::DeadLetter { .. } => "dead_letter",
        });
        if args.json {
            let steps: Vec<Value> = run
                .steps
                .iter()
                .map(|s| json!({"processor": s.processor, "kind": s.kind, "outcome": s.flow.label(), "flow": format!("{:?}", s.flow), "note": s.note, "emitted": s.emitted}))
                .collect();
            let v = json!({
                "line": number,
                "event_id": event.id().to_string(),
                "verdict": verdict_json(&run.verdict),
                "steps": steps,
                "changed": run.changed,
                "event": run.event,
                "fanout": fanout_text(&run.fanout),
                "state_writes": run.mutations.len(),
            });
            writeln!(out, "{v}")?;
        } else {
            writeln!(out, "line {number}  {}  {}", event.id(), describe(&event))?;
            for s in &run.steps {
                let mut l = format!("  {:<20} {:<18} {}", s.processor, s.kind, s.flow.label());
                if let tidings_core::process::Flow::Jump(to) = &s.flow {
                    l.push_str(&format!(" → {to}"));
                }
                if let Some(n) = &s.note {
                    l.push_str(&format!("  ({n})"));
                }
                for t in &s.emitted {
                    l.push_str(&format!("  side output → {t}"));
                }
                writeln!(out, "{l}")?;
            }
            if run.changed {
                writeln!(
                    out,
                    "  event changed: {}",
                    serde_json::to_string(&run.event)?
                )?;
            }
            if let Some(f) = fanout_text(&run.fanout) {
                writeln!(out, "  {f}")?;
            }
            writeln!(out, "  ⇒ {}\n", verdict_text(&run.verdict))?;
        }
    }
    print_summary(&mut out, &sum, args.json)?;
    if !sum.bad_lines.is_empty() {
        anyhow::bail!(
            "{} line(s) could not be read: {:?} (see above)",
            sum.bad_lines.len(),
            sum.bad_lines
        );
    }
    Ok(())
}

fn print_summary(out: &mut impl Write, sum: &Summary, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        let processors: Vec<Value> = sum
            .order
            .iter()
            .filter_map(|id| sum.processors.get(id).map(|p| (id, p)))
            .map(|(id, (kind, outcomes, sides))| json!({"processor": id, "kind": kind, "outcomes": outcomes, "side_outputs": sides}))
            .collect();
        let v = json!({"summary": {"processors": processors, "verdicts": sum.verdicts, "bad_lines": sum.bad_lines}});
        writeln!(out, "{v}")?;
        return Ok(());
    }
    writeln!(out, "summary")?;
    writeln!(
        out,
        "  {:<20} {:<18} {:>6} {:>6} {:>6} {:>6} {:>12} {:>13}",
        "processor", "kind", "next", "term", "jump", "drop", "dead_letter", "side outputs"
    )?;
    for id in &sum.order {
        let Some((kind, o, sides)) = sum.processors.get(id) else {
            continue;
        };
        let n = |k: &str| o.get(k).copied().unwrap_or(0);
        writeln!(
            out,
            "  {id:<20} {kind:<18} {:>6} {:>6} {:>6} {:>6} {:>12} {sides:>13}",
            n("next"),
            n("term"),
            n("jump"),
            n("drop"),
            n("dead_letter"),
        )?;
    }
    let v = |k: &str| sum.verdicts.get(k).copied().unwrap_or(0);
    writeln!(
        out,
        "  events: {} projected, {} dropped, {} stopped (term), {} dead letters; {} bad lines",
        v("projected"),
        v("dropped"),
        v("terminated"),
        v("dead_letter"),
        sum.bad_lines.len()
    )?;
    Ok(())
}
