//! `tidings demo`: a seeded feed workload on the embedded store, end to end in one process.
//!
//! Generates a social graph with power-law follower counts, publishes a mix of follows,
//! posts, likes, comments with mentions and a few retractions — each encoded as the Avro
//! single object a producer would send — applies them with the consumers' projector, then reads
//! a home feed back through the query path and prints a report.
//!
//! Until the live pipeline lands, events go straight from the encoder to the projector; the
//! Kafka hop (broker, consumers with offsets) is the next layer on top of the same code.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tidings_consumers::project::Projector;
use tidings_core::keys::feed::FeedKind;
use tidings_core::page::PageEntry;
use tidings_core::{Activity, Event, EventId, GraphChange, GraphOp, Producer, Retraction, UserId};
use tidings_query::FeedRequest;
use tidings_store::Store;

use crate::progress;

/// Flags of `tidings demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the embedded store lives (a fresh subdirectory per run is created inside).
    #[arg(long, env = "TIDINGS_DATA", default_value = "./data")]
    data: PathBuf,
    /// Users in the generated graph.
    #[arg(long, default_value_t = 2_000)]
    users: i64,
    /// Activities to publish (follows come on top).
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Seed of the generator: the same seed gives the same graph and events.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn producer() -> Producer {
    Producer::new("tidings-demo", env!("CARGO_PKG_VERSION"))
}

fn id(rng: &mut SmallRng, time_ms: i64) -> EventId {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&time_ms.to_be_bytes()[2..]);
    rng.fill(&mut b[6..]);
    b[6] = (b[6] & 0x0f) | 0x70; // version 7
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    EventId::from_bytes(b)
}

/// A user drawn with probability falling as a power of their id: low ids are popular.
fn popular(rng: &mut SmallRng, users: i64) -> UserId {
    let x: f64 = rng.random();
    ((users as f64).powf(x * x) as i64 - 1).clamp(0, users - 1)
}

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.users >= 10,
        "--users must be at least 10 (got {})",
        a.users
    );
    let dir = a.data.join(format!("demo-{}", std::process::id()));
    let url = format!("rocksdb:{}", dir.display());
    let store: Arc<dyn Store> = tidings_store::open(&url)?;
    let projector = Projector::new(1);
    let mut rng = SmallRng::seed_from_u64(a.seed);
    let mut clock = 1_767_225_600_000i64; // 2026-01-01T00:00Z
    let mut events: Vec<Event> = Vec::new();

    // The graph: every user follows 5..40 others, popular ones more likely.
    for u in 0..a.users {
        let n = rng.random_range(5..40).min(a.users - 1);
        for _ in 0..n {
            let f = popular(&mut rng, a.users);
            if f != u {
                clock += 1;
                events.push(Event::Graph(GraphChange {
                    id: id(&mut rng, clock),
                    actor: u,
                    subject: f,
                    op: GraphOp::Follow,
                    time_ms: clock,
                    producer: producer(),
                }));
            }
        }
    }
    let follows = events.len();
    // Activities: posts, likes of earlier posts (notifying the author), comments with mentions,
    // and a few retractions.
    let mut posts: Vec<(EventId, UserId)> = Vec::new();
    let mut retractions = 0u64;
    for _ in 0..a.events {
        clock += rng.random_range(1..2_000);
        let actor = popular(&mut rng, a.users);
        let roll: f64 = rng.random();
        let event_id = id(&mut rng, clock);
        let mut act = Activity {
            id: event_id,
            actor,
            verb: "post".into(),
            object: format!("post:{event_id}"),
            target: None,
            time_ms: clock,
            to: vec![],
            text: format!("post number {} by user {actor}", posts.len()),
            attributes: Default::default(),
            producer: producer(),
        };
        if roll < 0.45 || posts.is_empty() {
            posts.push((event_id, actor));
        } else if roll < 0.80 {
            let (pid, author) = posts[posts.len() - 1 - rng.random_range(0..posts.len().min(50))];
            act.verb = "like".into();
            act.object = format!("post:{pid}");
            act.to = vec![author];
            act.text.clear();
        } else if roll < 0.99 {
            let (pid, author) = posts[posts.len() - 1 - rng.random_range(0..posts.len().min(50))];
            act.verb = "comment".into();
            act.target = Some(format!("post:{pid}"));
            act.to = vec![author, rng.random_range(0..a.users)];
            act.text = format!("reply to {pid}");
        } else {
            let (pid, author) = posts[rng.random_range(0..posts.len())];
            retractions += 1;
            events.push(Event::Retraction(Retraction {
                id: event_id,
                activity_id: pid,
                actor: author,
                time_ms: clock,
                producer: producer(),
            }));
            continue;
        }
        events.push(Event::Activity(act));
    }

    let pb = progress::bar(events.len() as u64, "apply");
    let start = Instant::now();
    let mut entries = 0u64;
    let mut bytes = 0u64;
    for (i, e) in events.iter().enumerate() {
        let body = tidings_schemas::encode(e);
        bytes += body.len() as u64;
        let decoded = tidings_schemas::decode_and_validate(&body)?;
        entries += projector.apply(&*store, &decoded, &body)?;
        if i % 256 == 0 {
            pb.set_position(i as u64);
        }
    }
    pb.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();

    // Read back the home feed of the most followed user's most active follower: user 1.
    let reader: UserId = 1;
    let page = tidings_query::read(
        &*store,
        &FeedRequest {
            user: reader,
            kind: FeedKind::Home,
            limit: 20,
            cursor: None,
            aggregate: true,
        },
        &tidings_query::ReadConfig::default(),
    )?;

    println!("tidings demo (seed {})", a.seed);
    println!("  users                  {}", a.users);
    println!("  follows applied        {follows}");
    println!("  activities applied     {}", events.len() - follows);
    println!("  retractions            {retractions}");
    println!("  avro bytes encoded     {bytes}");
    println!("  feed entries written   {entries}");
    println!(
        "  throughput             {:.0} events/s, {:.0} entries/s (encode + decode + fan-out + commit)",
        events.len() as f64 / secs,
        entries as f64 / secs
    );
    println!("\nhome feed of user {reader}, newest first, aggregated:");
    for e in &page.entries {
        match e {
            PageEntry::Item(i) => {
                println!("  - user {} {} {}  {}", i.actor, i.verb, i.object, i.text)
            }
            PageEntry::Group(g) => println!("  * {}", g.summary),
        }
    }
    if page.entries.is_empty() {
        println!("  (empty)");
    }
    println!("\ndata: {url}");
    Ok(())
}
