//! Rule expressions: [rhai](https://rhai.rs) expressions over an event's fields.
//!
//! Why rhai: the issue's example `verb == "post" && text.len() > 5000` is valid rhai as
//! written; it is pure Rust, MIT/Apache-2.0 (evalexpr, the other candidate, is AGPL-3.0 from
//! version 12 on, and has no method-call syntax); and it can be held to **expressions only**
//! (`compile_expression`: no statements, loops, functions or modules), with strict variables
//! (an unknown field name is a config error, not a silent `()`), an operation budget per
//! evaluation, and no clock (`no_time`) and no printing, so a rule decides the same on every
//! replay. Each expression is compiled once, when the config is loaded.
//!
//! The variables, for every event (fields a kind lacks are empty: `""`, `[]`, `#{}`, `-1`):
//!
//! | name | type | value |
//! |---|---|---|
//! | `type` | string | `activity`, `retraction`, `update`, `graph` |
//! | `id` | string | the event id |
//! | `verb` | string | the activity verb, `retract`, `update`, or the graph op (`follow`, …) |
//! | `actor` | int | who acts |
//! | `object`, `target` | string | the activity's object and target |
//! | `text` | string | the activity's text (an update's new text) |
//! | `to` | array of int | explicit recipients (after `mentions`, if it ran before) |
//! | `attributes` | map of string | the activity's (an update's) attributes: `attributes.lang`, `attributes["x-y"]` |
//! | `time_ms` | int | the event time |
//! | `log_time_ms` | int | the record timestamp, else the event time |
//! | `producer`, `producer_version` | string | who published it |
//! | `subject` | int | a graph change's subject |
//! | `activity_id` | string | what a retraction or update refers to |
//!
//! Useful built-ins: `text.len()` (characters), `text.bytes` (UTF-8 bytes), `text.contains("x")`,
//! `to.len()`, `x in to` (array membership), `"lang" in attributes`, `verb in ["like", "share"]`,
//! `attributes.lang ?? "en"`. A missing attribute is `()`, which equals nothing.

use std::sync::OnceLock;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, Scope, AST};

use crate::event::Event;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut e = Engine::new();
        e.set_strict_variables(true)
            .set_max_operations(100_000)
            .set_max_expr_depths(64)
            .set_max_string_size(1 << 20)
            .set_max_array_size(10_000)
            .set_max_map_size(1_000)
            .disable_symbol("eval")
            .on_print(|_| {})
            .on_debug(|_, _, _| {});
        e
    })
}

/// The variables of `e` for an expression.
fn scope(e: &Event, log_time_ms: i64) -> Scope<'static> {
    let mut s = Scope::new();
    let (kind, object, target, text, to, attributes, subject, activity_id) = match e {
        Event::Activity(a) => (
            "activity",
            a.object.clone(),
            a.target.clone().unwrap_or_default(),
            a.text.clone(),
            a.to.iter().map(|u| Dynamic::from(*u)).collect::<Array>(),
            attributes(&a.attributes),
            -1,
            String::new(),
        ),
        Event::Retraction(r) => (
            "retraction",
            String::new(),
            String::new(),
            String::new(),
            Array::new(),
            Map::new(),
            -1,
            r.activity_id.to_string(),
        ),
        Event::Update(u) => (
            "update",
            String::new(),
            String::new(),
            u.text.clone().unwrap_or_default(),
            Array::new(),
            attributes(&u.attributes),
            -1,
            u.activity_id.to_string(),
        ),
        Event::Graph(g) => (
            "graph",
            String::new(),
            String::new(),
            String::new(),
            Array::new(),
            Map::new(),
            g.subject,
            String::new(),
        ),
    };
    s.push("type", kind.to_string())
        .push("id", e.id().to_string())
        .push("verb", e.verb().to_string())
        .push("actor", e.actor())
        .push("object", object)
        .push("target", target)
        .push("text", text)
        .push("to", to)
        .push("attributes", attributes)
        .push("time_ms", e.time_ms())
        .push("log_time_ms", log_time_ms)
        .push("producer", e.producer().name.clone())
        .push("producer_version", e.producer().version.clone())
        .push("subject", subject)
        .push("activity_id", activity_id);
    s
}

fn attributes(a: &std::collections::BTreeMap<String, String>) -> Map {
    a.iter()
        .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
        .collect()
}

/// A compiled boolean expression.
#[derive(Debug)]
pub(crate) struct Expr {
    ast: AST,
}

impl Expr {
    /// Compiles `text`, checking it against a sample activity: a syntax error, an unknown
    /// variable or a result that is not true/false is an error (a message for the config).
    pub(crate) fn compile(text: &str) -> Result<Expr, String> {
        let sample = sample();
        let ast = engine()
            .compile_expression_with_scope(&scope(&sample, 1), text)
            .map_err(|e| format!("`{text}` does not parse: {e}"))?;
        let expr = Expr { ast };
        match expr.eval_raw(&sample, 1) {
            Err(e) if matches!(*e, EvalAltResult::ErrorMismatchOutputType(..)) => {
                Err(format!("`{text}` must give true or false: {e}"))
            }
            // Other errors depend on the event (an index past the end, …): judged per event.
            _ => Ok(expr),
        }
    }

    /// Evaluates the expression for `e`.
    pub(crate) fn eval(&self, e: &Event, log_time_ms: i64) -> Result<bool, String> {
        self.eval_raw(e, log_time_ms).map_err(|err| err.to_string())
    }

    fn eval_raw(&self, e: &Event, log_time_ms: i64) -> Result<bool, Box<EvalAltResult>> {
        engine().eval_ast_with_scope::<bool>(&mut scope(e, log_time_ms), &self.ast)
    }
}

fn sample() -> Event {
    Event::Activity(crate::event::Activity {
        id: crate::event::EventId::MIN,
        actor: 1,
        verb: "post".into(),
        object: "post:1".into(),
        target: None,
        time_ms: 1,
        to: vec![2],
        text: "sample".into(),
        attributes: [("lang".to_string(), "en".to_string())].into(),
        producer: crate::event::Producer::new("sample", "1"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::event::{Activity, EventId, GraphChange, GraphOp, Producer};

    fn post(text: &str) -> Event {
        Event::Activity(Activity {
            id: EventId::MIN,
            actor: 7,
            verb: "post".into(),
            object: "post:1".into(),
            target: None,
            time_ms: 1_000,
            to: vec![3, 4],
            text: text.into(),
            attributes: [("lang".to_string(), "de".to_string())].into(),
            producer: Producer::new("posts-api", "1.4.2"),
        })
    }

    fn eval(expr: &str, e: &Event) -> bool {
        Expr::compile(expr).unwrap().eval(e, 5_000).unwrap()
    }

    #[test]
    fn the_issues_example_is_valid_as_written() {
        let x = "verb == \"post\" && text.len() > 5000";
        assert!(eval(x, &post(&"a".repeat(5001))));
        assert!(!eval(x, &post(&"a".repeat(5000))));
        // len() counts characters, .bytes counts UTF-8 bytes.
        assert!(!eval(x, &post(&"é".repeat(3000))));
        assert!(eval("text.bytes > 5000", &post(&"é".repeat(3000))));
    }

    #[test]
    fn every_field_is_there() {
        let p = post("hello @3");
        assert!(eval(
            "type == \"activity\" && actor == 7 && object == \"post:1\"",
            &p
        ));
        assert!(eval("3 in to && to.len() == 2 && target == \"\"", &p));
        assert!(eval(
            "attributes.lang == \"de\" && attributes.missing == ()",
            &p
        ));
        assert!(eval(
            "producer == \"posts-api\" && producer_version == \"1.4.2\"",
            &p
        ));
        assert!(eval(
            "time_ms == 1000 && log_time_ms == 5000 && subject == -1",
            &p
        ));
        assert!(eval(
            "text.contains(\"@3\") && verb in [\"post\", \"comment\"]",
            &p
        ));
        let g = Event::Graph(GraphChange {
            id: EventId::MIN,
            actor: 1,
            subject: 2,
            op: GraphOp::Block,
            time_ms: 1,
            producer: Producer::new("g", "1"),
        });
        assert!(eval(
            "type == \"graph\" && verb == \"block\" && subject == 2",
            &g
        ));
        assert!(eval("text == \"\" && to.len() == 0", &g));
    }

    #[test]
    fn bad_expressions_are_refused_when_compiled() {
        let e = Expr::compile("verb == ").unwrap_err();
        assert!(e.contains("does not parse"), "{e}");
        let e = Expr::compile("verbb == \"post\"").unwrap_err();
        assert!(e.contains("verbb"), "{e}");
        let e = Expr::compile("text.len()").unwrap_err();
        assert!(e.contains("true or false"), "{e}");
        assert!(Expr::compile("let x = 1; x == 1").is_err(), "statements");
        assert!(Expr::compile("eval(\"1\") == 1").is_err(), "eval");
        // No clock: `timestamp()` does not exist.
        let p = post("x");
        assert!(Expr::compile("timestamp() > 0")
            .and_then(|x| x.eval(&p, 1))
            .is_err());
    }

    #[test]
    fn evaluation_errors_are_reported_per_event() {
        let x = Expr::compile("to[5] == 1").unwrap();
        assert!(x.eval(&post("x"), 1).is_err());
    }
}
