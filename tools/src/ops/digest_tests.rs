use serde_json::{json, Map};

use super::*;

fn dead(ts_ms: i64, code: &str, producer: Option<&str>) -> DeadRecord {
    DeadRecord {
        ts_ms,
        code: code.into(),
        reason: format!("why {code}"),
        producer: producer.map(str::to_owned),
    }
}

fn logged(ts_ms: i64, level: &str, message: &str) -> Logged {
    let mut fields = Map::new();
    fields.insert("offset".into(), json!(ts_ms));
    Logged {
        ts_ms,
        level: level.into(),
        target: "tidings_consumers::apply".into(),
        message: message.into(),
        fields,
    }
}

const H: i64 = 3_600_000;

#[test]
fn counts_by_reason_producer_and_window() {
    let t0 = 1_796_000_000_000 / H * H;
    let d = Digest::build(
        t0,
        t0 + 3 * H,
        H,
        &[
            dead(t0 + 5, "invalid", Some("svc@1.2")),
            dead(t0 + H + 1, "not_single_object", None),
            dead(t0 + H + 2, "invalid", Some("svc@1.2")),
            dead(t0 + 2 * H, "rejected", Some("other@3")),
        ],
        &[
            logged(t0 + 10, "WARN", "record sent to the dead letter topic"),
            logged(t0 + 20, "WARN", "record sent to the dead letter topic"),
            logged(
                t0 + H + 30,
                "ERROR",
                "batch not applied (nothing of it is lost); retrying",
            ),
        ],
        2,
    );
    assert_eq!(d.kind, "tidings.error_digest");
    assert_eq!(d.dead_letters.total, 4);
    let counts = |v: &[Count]| -> Vec<(String, u64)> {
        v.iter().map(|c| (c.key.clone(), c.count)).collect()
    };
    assert_eq!(
        counts(&d.dead_letters.by_reason),
        vec![
            ("invalid".into(), 2),
            ("not_single_object".into(), 1),
            ("rejected".into(), 1)
        ]
    );
    assert_eq!(
        d.dead_letters.by_reason[0].example.as_deref(),
        Some("why invalid")
    );
    assert_eq!(
        counts(&d.dead_letters.by_producer),
        vec![
            ("svc@1.2".into(), 2),
            ("other@3".into(), 1),
            ("unknown".into(), 1)
        ]
    );
    let w: Vec<(i64, u64)> = d
        .dead_letters
        .windows
        .iter()
        .map(|w| (w.start_ms - t0, w.count))
        .collect();
    assert_eq!(w, vec![(0, 1), (H, 2), (2 * H, 1)]);
    assert_eq!(d.dead_letters.windows[1].by_reason["invalid"], 1);
    assert_eq!(d.dead_letters.windows[1].start, format_ms(t0 + H));

    assert_eq!(d.logged.total, 3);
    assert_eq!(
        counts(&d.logged.by_message),
        vec![
            (
                "WARN tidings_consumers::apply: record sent to the dead letter topic".into(),
                2
            ),
            (
                "ERROR tidings_consumers::apply: batch not applied (nothing of it is lost); retrying"
                    .into(),
                1
            ),
        ]
    );
    assert_eq!(
        d.logged.by_message[0].example.as_deref(),
        Some(format!("{{\"offset\":{}}}", t0 + 10).as_str())
    );
    assert_eq!(
        counts(&d.logged.by_level),
        vec![("WARN".into(), 2), ("ERROR".into(), 1)]
    );
    assert_eq!(d.logged.windows.len(), 2);
    assert_eq!(d.unreadable_log_lines, 2);
    assert!(!d.is_empty());

    let text = d.text();
    assert!(text.contains("dead letters: 4\n"), "{text}");
    assert!(
        text.contains("        2  invalid  e.g. why invalid\n"),
        "{text}"
    );
    assert!(text.contains("logged warnings and errors: 3\n"), "{text}");
    assert!(text.contains("(2 unreadable lines"), "{text}");

    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(
        v["dead_letters"]["by_producer"][2],
        json!({"key": "unknown", "count": 1})
    );
    assert_eq!(v["from"], format_ms(t0));
    assert_eq!(v["window_ms"], H);
}

#[test]
fn an_empty_period_is_empty() {
    let d = Digest::build(0, H, H, &[], &[], 0);
    assert!(d.is_empty());
    assert!(d.dead_letters.windows.is_empty() && d.logged.by_message.is_empty());
    assert_eq!(
        d.text(),
        format!(
            "error digest {} .. {} (windows of 3600 s)\ndead letters: 0\nlogged warnings and errors: 0\n",
            format_ms(0),
            format_ms(H)
        )
    );
}
