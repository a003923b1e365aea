//! `validate`: field rules beyond the schema, for activities. The first rule an activity breaks
//! sends it to the dead letter topic with a code naming the rule; other events pass.
//!
//! ```toml
//! [[pipeline.processor]]
//! id = "fields"
//! kind = "validate"
//! verbs = ["post", "like", "comment", "share"]   # allow-list (code verb_not_allowed)
//! max_text_bytes = 5000                           # code text_too_long
//! max_recipients = 20                             # `to` entries (code too_many_recipients)
//! require_target = ["comment"]                    # these verbs need a target (code target_required)
//! object_prefixes = ["post:", "photo:"]           # object must start with one (code object_not_allowed)
//! ```
//!
//! Matches (its `emit` fires) when a rule is broken. The schema's own limits
//! ([`crate::validate`]) were checked at decode time already.

use serde::Deserialize;

use super::config::{check_verbs, config_error, EmitConfig};
use super::{Ctx, Decision, Flow, ProcessError, Processor};
use crate::event::Event;

/// `kind = "validate"`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// The processor's id.
    pub id: String,
    /// Side output when an activity breaks a rule.
    pub emit: Option<EmitConfig>,
    /// Verbs allowed (absent: any verb the schema allows).
    pub verbs: Option<Vec<String>>,
    /// Longest `text`, in bytes.
    pub max_text_bytes: Option<usize>,
    /// Most explicit recipients (`to`).
    pub max_recipients: Option<usize>,
    /// Verbs whose activities must have a `target` (e.g. a comment names what it replies to).
    #[serde(default)]
    pub require_target: Vec<String>,
    /// Prefixes one of which `object` must start with (e.g. `post:`).
    pub object_prefixes: Option<Vec<String>>,
}

#[derive(Debug)]
pub(crate) struct Validate(ValidateConfig);

impl Validate {
    pub(crate) fn new(c: &ValidateConfig) -> Result<Self, ProcessError> {
        if let Some(v) = &c.verbs {
            if v.is_empty() {
                return Err(config_error(
                    &c.id,
                    "verbs = []: that allows nothing; leave it out to allow every verb",
                ));
            }
            check_verbs(&c.id, "verbs", v)?;
        }
        check_verbs(&c.id, "require_target", &c.require_target)?;
        if c.object_prefixes.as_ref().is_some_and(Vec::is_empty) {
            return Err(config_error(
                &c.id,
                "object_prefixes = []: that allows no object; leave it out to allow any",
            ));
        }
        Ok(Validate(c.clone()))
    }
}

impl Processor for Validate {
    fn process(&self, cx: &mut Ctx<'_>) -> Result<Decision, ProcessError> {
        let Event::Activity(a) = &cx.event else {
            return Ok(Decision::next());
        };
        let c = &self.0;
        let broken = if c.verbs.as_ref().is_some_and(|v| !v.contains(&a.verb)) {
            Some((
                "verb_not_allowed",
                format!("field `verb`: {:?} is not one of the allowed verbs", a.verb),
            ))
        } else if c.max_text_bytes.is_some_and(|m| a.text.len() > m) {
            Some((
                "text_too_long",
                format!(
                    "field `text`: {} bytes, at most {} allowed",
                    a.text.len(),
                    c.max_text_bytes.unwrap_or_default()
                ),
            ))
        } else if c.max_recipients.is_some_and(|m| a.to.len() > m) {
            Some((
                "too_many_recipients",
                format!(
                    "field `to`: {} recipients, at most {} allowed",
                    a.to.len(),
                    c.max_recipients.unwrap_or_default()
                ),
            ))
        } else if a.target.is_none() && c.require_target.contains(&a.verb) {
            Some((
                "target_required",
                format!("field `target`: a {:?} needs a target", a.verb),
            ))
        } else if c
            .object_prefixes
            .as_ref()
            .is_some_and(|ps| !ps.iter().any(|p| a.object.starts_with(p.as_str())))
        {
            Some((
                "object_not_allowed",
                format!(
                    "field `object`: {:?} starts with none of {:?}",
                    a.object,
                    c.object_prefixes.as_deref().unwrap_or_default()
                ),
            ))
        } else {
            None
        };
        Ok(match broken {
            None => Decision::next(),
            Some((code, why)) => Decision::matched(
                Flow::DeadLetter {
                    code: code.to_string(),
                    reason: format!("processor `{}`: {why}", c.id),
                },
                code,
            ),
        })
    }
}
