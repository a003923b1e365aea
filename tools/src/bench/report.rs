//! A benchmark's figures: printed as a table, optionally written as JSON.

use std::path::Path;

use serde::Serialize;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The target, if the issue set one (higher is better unless `lower_is_better`).
    pub target: Option<f64>,
    /// Direction of the target.
    pub lower_is_better: bool,
}

/// A benchmark run: context and figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Benchmark name.
    pub bench: String,
    /// Parameters and machine facts.
    pub context: Vec<(String, String)>,
    /// The figures.
    pub figures: Vec<Figure>,
}

impl Report {
    /// A report for `bench`, with the machine's facts.
    pub fn new(bench: &str) -> Self {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        Report {
            bench: bench.to_owned(),
            context: vec![
                ("cpus".into(), cpus.to_string()),
                ("tidings".into(), env!("CARGO_PKG_VERSION").into()),
            ],
            figures: Vec::new(),
        }
    }

    /// Adds a context fact.
    pub fn context(&mut self, k: &str, v: impl ToString) {
        self.context.push((k.to_owned(), v.to_string()));
    }

    /// Adds a figure (higher is better).
    pub fn figure(&mut self, name: &str, value: f64, unit: &str, target: Option<f64>) {
        self.figures.push(Figure {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            target,
            lower_is_better: false,
        });
    }

    /// Adds a figure where lower is better (latencies).
    pub fn figure_low(&mut self, name: &str, value: f64, unit: &str, target: Option<f64>) {
        self.figures.push(Figure {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            target,
            lower_is_better: true,
        });
    }

    /// The table as text.
    pub fn table(&self) -> String {
        let mut out = format!("tidings bench {}\n", self.bench);
        for (k, v) in &self.context {
            out.push_str(&format!("  {k}: {v}\n"));
        }
        out.push_str(&format!(
            "\n| {:<44} | {:>14} | {:<9} | {:>16} |\n|{}|{}|{}|{}|\n",
            "figure",
            "value",
            "unit",
            "target",
            "-".repeat(46),
            "-".repeat(16),
            "-".repeat(11),
            "-".repeat(18)
        ));
        for f in &self.figures {
            let target = match f.target {
                None => String::new(),
                Some(t) => {
                    let met = if f.lower_is_better {
                        f.value <= t
                    } else {
                        f.value >= t
                    };
                    format!(
                        "{} {} {}",
                        if f.lower_is_better { "≤" } else { "≥" },
                        human(t),
                        if met { "met" } else { "MISSED" }
                    )
                }
            };
            out.push_str(&format!(
                "| {:<44} | {:>14} | {:<9} | {:>16} |\n",
                f.name,
                human(f.value),
                f.unit,
                target
            ));
        }
        out
    }

    /// Prints the table and writes JSON if asked.
    pub fn emit(&self, json: Option<&Path>) -> anyhow::Result<()> {
        println!("{}", self.table());
        if let Some(path) = json {
            std::fs::write(path, serde_json::to_vec_pretty(self)?)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            println!("JSON written to {}", path.display());
        }
        Ok(())
    }
}

/// CPU seconds this process used so far, all threads (user and system; RocksDB's background
/// threads included), from `/proc/self/stat` (`None` elsewhere; USER_HZ taken as Linux's 100).
/// Printed beside rates to tell a slow moment of the VM from a slower change: it does not count
/// waiting for a core, though it still grows when the host is busy (shared caches).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at state, field 3: utime
    // and stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// 1234567.8 → "1,234,568"; 12.345 → "12.35".
pub fn human(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v);
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_numbers() {
        assert_eq!(human(1_234_567.8), "1,234,568");
        assert_eq!(human(999.456), "999.46");
        assert_eq!(human(-1000.0), "-1,000");
    }

    #[test]
    fn table_marks_targets() {
        let mut r = Report::new("x");
        r.figure("w", 400_000.0, "entries/s", Some(300_000.0));
        r.figure_low("p99", 12.0, "ms", Some(10.0));
        let t = r.table();
        assert!(t.contains("≥ 300,000 met"), "{t}");
        assert!(t.contains("≤ 10.00 MISSED"), "{t}");
    }
}
