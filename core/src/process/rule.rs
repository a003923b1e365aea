//! `rule`: an expression over the event's fields decides the flow.
//!
//! ```toml
//! [[pipeline.processor]]
//! id = "long-posts"
//! kind = "rule"
//! when = 'verb == "post" && text.len() > 5000'   # rhai; see `expr` for the fields
//! then = "dead_letter"      # next (default) | term | drop | dead_letter | jump:<a later id>
//! code = "post_too_long"    # dead_letter: the reason code (default rule_rejected)
//! reason = "posts are limited to 5000 characters"  # drop: the counted reason (default: the id)
//! emit = { topic = "tidings.audit", format = "json" }  # side output whenever `when` holds
//! ```
//!
//! When `when` holds the rule *matches*: its `then` applies and its `emit` fires; otherwise the
//! event goes on (`next`). `jump:<id>` must name a processor after this one. An expression that
//! fails on an event (an index past the end of `to`, a method a value lacks) sends that event to
//! the dead letter topic with code `rule_error` and the error, rather than stopping the
//! pipeline or guessing.

use serde::Deserialize;

use super::config::{config_error, EmitConfig};
use super::expr::Expr;
use super::{Ctx, Decision, Flow, ProcessError, Processor};

/// `kind = "rule"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The processor's id.
    pub id: String,
    /// Side output whenever `when` holds.
    pub emit: Option<EmitConfig>,
    /// The condition (a rhai expression giving true or false).
    pub when: String,
    /// What happens when it holds: `next`, `term`, `drop`, `dead_letter`, `jump:<id>`.
    #[serde(default = "next")]
    pub then: String,
    /// `drop`: the reason counted (default: the rule's id); `dead_letter`: the reason text.
    pub reason: Option<String>,
    /// `dead_letter`: the reason code (default `rule_rejected`).
    pub code: Option<String>,
}

fn next() -> String {
    "next".into()
}

#[derive(Debug)]
pub(crate) struct Rule {
    id: String,
    when: Expr,
    source: String,
    then: Flow,
}

impl Rule {
    /// Compiles the rule that sits at position `at` of a chain whose ids are `ids`.
    pub(crate) fn new(c: &RuleConfig, ids: &[&str], at: usize) -> Result<Self, ProcessError> {
        let when = Expr::compile(&c.when).map_err(|e| config_error(&c.id, format!("when: {e}")))?;
        let then = match c.then.as_str() {
            "next" => Flow::Next,
            "term" => Flow::Term,
            "drop" => Flow::Drop {
                reason: c.reason.clone().unwrap_or_else(|| c.id.clone()),
            },
            "dead_letter" => Flow::DeadLetter {
                code: c.code.clone().unwrap_or_else(|| "rule_rejected".into()),
                reason: format!(
                    "processor `{}`: {}",
                    c.id,
                    c.reason
                        .clone()
                        .unwrap_or_else(|| format!("`{}` holds", c.when))
                ),
            },
            other => match other.strip_prefix("jump:") {
                Some(target) => {
                    match ids.iter().position(|i| *i == target) {
                        Some(j) if j > at => {}
                        Some(j) if j == at => {
                            return Err(config_error(&c.id, "then = jump to itself: only jumps to a later processor are allowed, so every chain ends"));
                        }
                        Some(j) => {
                            return Err(config_error(&c.id, format!("then = jump:{target} goes backward (to processor #{} from #{}): only jumps to a later processor are allowed, so every chain ends", j + 1, at + 1)));
                        }
                        None => {
                            return Err(config_error(
                                &c.id,
                                format!("then = jump:{target}: there is no processor with that id"),
                            ));
                        }
                    }
                    Flow::Jump(target.to_string())
                }
                None => {
                    return Err(config_error(
                        &c.id,
                        format!(
                            "then = {other:?}: expected next, term, drop, dead_letter or jump:<id>"
                        ),
                    ))
                }
            },
        };
        if c.code.is_some() && !matches!(then, Flow::DeadLetter { .. }) {
            return Err(config_error(
                &c.id,
                "code is only used with then = \"dead_letter\"",
            ));
        }
        Ok(Rule {
            id: c.id.clone(),
            when,
            source: c.when.clone(),
            then,
        })
    }
}

impl Processor for Rule {
    fn process(&self, cx: &mut Ctx<'_>) -> Result<Decision, ProcessError> {
        match self.when.eval(&cx.event, cx.log_time_ms) {
            Ok(true) => Ok(Decision::matched(
                self.then.clone(),
                format!("`{}` holds", self.source),
            )),
            Ok(false) => Ok(Decision::next()),
            Err(e) => Ok(Decision {
                flow: Flow::DeadLetter {
                    code: "rule_error".into(),
                    reason: format!(
                        "processor `{}`: `{}` failed on this event: {e}",
                        self.id, self.source
                    ),
                },
                matched: false,
                note: Some("the expression failed".into()),
            }),
        }
    }
}
