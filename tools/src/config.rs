//! The config file (`--config FILE`, TOML). Every section and key is optional; unknown keys are
//! an error naming the key, so a typo never silently falls back to a default.
//!
//! `[query]` configures the query service; `[pipeline]` the processor chain the consumers run
//! on every event (`tidings_core::process`; each kind's keys are documented there and in the
//! README). `tidings up` and `tidings consume` re-read the file when it changes and swap the
//! chain between batches; a file that does not parse or validate is refused whole, the error
//! logged, and the running chain kept.
//!
//! ```toml
//! [admin]
//! token = "change-me-to-a-long-random-string"  # TIDINGS_ADMIN_TOKEN overrides it
//!
//! [query]
//! cache_mb = 64          # page cache bound; 0 turns it off
//! stream_poll_ms = 20    # how often a home:stream checks its feed
//! max_pulled = 10000     # pulled (hybrid) authors considered per home page
//!
//! # Aggregation rules, first match wins; they replace the defaults when present. Applied at
//! # read time, so a change applies to old items too.
//! [[query.aggregation]]
//! name = "reactions"
//! verbs = ["like", "share"]
//! by = "verb_object"
//!
//! [[query.aggregation]]
//! name = "bursts"
//! verbs = ["post"]
//! by = "verb_actor"
//! window_ms = 3600000
//!
//! # The processor chain, in order. Each has an id (metrics, state keys, headers), a kind, the
//! # kind's keys, and optionally emit = { topic, format = "json" | "avro", note }.
//! [[pipeline.processor]]
//! id = "fields"
//! kind = "validate"                   # field rules → dead letter topic
//! verbs = ["post", "like", "comment", "share"]
//! max_text_bytes = 8000
//! max_recipients = 50
//! require_target = ["comment"]
//!
//! [[pipeline.processor]]
//! id = "dedupe"
//! kind = "dedupe"                     # same event id again within the window → drop
//! window_ms = 600000
//!
//! [[pipeline.processor]]
//! id = "flood"
//! kind = "rate_limit"                 # per actor, per window of log time
//! max_events = 30
//! per_ms = 60000
//! verbs = ["post", "comment"]
//! excess_topic = "tidings.deferred"   # excess deferred there instead of dropped
//!
//! [[pipeline.processor]]
//! id = "long-posts"
//! kind = "rule"                       # a rhai expression over the event's fields
//! when = 'verb == "post" && text.len() > 5000'
//! then = "drop"                       # next | term | drop | dead_letter | jump:<later id>
//! reason = "too_long"
//! emit = { topic = "tidings.audit", format = "json" }
//!
//! [[pipeline.processor]]
//! id = "staff"
//! kind = "rule"
//! when = 'producer == "staff-tools"'
//! then = "jump:likes"                 # staff posts skip the mention processor
//!
//! [[pipeline.processor]]
//! id = "mentions"
//! kind = "mentions"                   # @<user id> in the text → notification
//! max_mentions = 10
//!
//! [[pipeline.processor]]
//! id = "likes"
//! kind = "route"                      # likes only to the liked post's owner (in `to`)
//! verbs = ["like"]
//! targets = ["notifications"]
//!
//! [[pipeline.processor]]
//! id = "blocks"
//! kind = "block_mute_filter"          # no entries for followers who block the actor
//! mutes = false
//! notifications = true
//! ```

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use tidings_core::page::AggregationRule;
use tidings_core::process::{Chain, PipelineConfig};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The query service.
    #[serde(default)]
    pub query: QueryConfig,
    /// The processor chain the consumers run (`[[pipeline.processor]]`).
    #[serde(default)]
    pub pipeline: PipelineConfig,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token the admin API (`/v1/admin/…`) requires; `TIDINGS_ADMIN_TOKEN` overrides
    /// it. Absent: the admin API answers 403.
    pub token: Option<String>,
}

/// `[query]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Page cache bound in MiB (0: off).
    pub cache_mb: Option<usize>,
    /// `home:stream` poll interval.
    pub stream_poll_ms: Option<u64>,
    /// Pulled authors considered per home page.
    pub max_pulled: Option<usize>,
    /// Aggregation rules replacing the defaults.
    pub aggregation: Option<Vec<AggregationRule>>,
}

impl Config {
    /// Reads `path`, or the defaults when `None`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("in the config file {}", path.display()))
    }

    /// The processor chain of `path` (the empty chain when `None`).
    pub fn chain(path: Option<&Path>) -> anyhow::Result<Chain> {
        Config::load(path)?.build_chain()
    }

    /// Builds the chain of `[pipeline]` (checks ids, jumps, parameters, expressions).
    pub fn build_chain(&self) -> anyhow::Result<Chain> {
        Chain::build(&self.pipeline).context("in [pipeline]")
    }

    /// Parses TOML text and checks the values, the processor chain included.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let c: Config = toml::from_str(text)?;
        c.build_chain()?;
        if let Some(rules) = &c.query.aggregation {
            for r in rules {
                anyhow::ensure!(
                    r.window_ms > 0,
                    "aggregation rule {:?}: window_ms must be positive",
                    r.name
                );
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_core::page::GroupBy;

    #[test]
    fn parses_the_documented_example() {
        let doc = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::parse(&doc).unwrap();
        assert_eq!(
            c.admin.token.as_deref(),
            Some("change-me-to-a-long-random-string")
        );
        assert_eq!(c.query.cache_mb, Some(64));
        let rules = c.query.aggregation.clone().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].by, GroupBy::VerbActor);
        assert_eq!(rules[1].window_ms, 3_600_000);
        let chain = c.build_chain().unwrap();
        let kinds: Vec<(String, String)> = chain.summary();
        assert_eq!(
            kinds
                .iter()
                .map(|(id, kind)| format!("{id}:{kind}"))
                .collect::<Vec<_>>(),
            [
                "fields:validate",
                "dedupe:dedupe",
                "flood:rate_limit",
                "long-posts:rule",
                "staff:rule",
                "mentions:mentions",
                "likes:route",
                "blocks:block_mute_filter"
            ]
        );
        assert_eq!(chain.topics(), ["tidings.audit", "tidings.deferred"]);
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let e = Config::parse("[admin]\ntokn = \"x\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("tokn"), "{e:#}");
        let e = Config::parse("[query]\ncache_mbs = 3\n").unwrap_err();
        assert!(format!("{e:#}").contains("cache_mbs"), "{e:#}");
        let e = Config::parse(
            "[[query.aggregation]]\nname = \"x\"\nby = \"verb_object\"\nwindow_ms = 0\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("window_ms"), "{e:#}");
        let e =
            Config::parse("[[query.aggregation]]\nname = \"x\"\nby = \"sideways\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("sideways"), "{e:#}");
        // The chain is checked as part of the file.
        let e = Config::parse(
            "[[pipeline.processor]]\nid = \"r\"\nkind = \"rule\"\nwhen = \"verb ==\"\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("processor `r`: when:"), "{e:#}");
        let e = Config::parse("[pipeline]\nprocessors = []\n").unwrap_err();
        assert!(format!("{e:#}").contains("processors"), "{e:#}");
    }
}
