//! Encode / decode throughput on one core. Not run by default; run it optimized:
//!
//! ```text
//! cargo test --release -p tidings-schemas --test throughput -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used)]

mod common;

use std::hint::black_box;
use std::time::Instant;

use tidings_schemas::{decode, encode};

#[test]
#[ignore = "measurement; run with --release -- --ignored --nocapture"]
fn throughput() {
    let events = common::all_samples();
    let n = 300_000;
    let start = Instant::now();
    let mut bytes = 0;
    for i in 0..n {
        bytes += black_box(encode(black_box(&events[i % events.len()]))).len();
    }
    let enc = n as f64 / start.elapsed().as_secs_f64();
    let encoded: Vec<Vec<u8>> = events.iter().map(encode).collect();
    let start = Instant::now();
    for i in 0..n {
        black_box(decode(black_box(&encoded[i % encoded.len()])).unwrap());
    }
    let dec = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "encode {enc:.0} events/s, decode {dec:.0} events/s ({} B/event on average)",
        bytes / n
    );
}
