//! The summary every `preflight bench` command ends with: each metric with its goal, the floor
//! where one is measured, the figure and whether the goal was met, side by side, so a
//! regression shows at a glance; and the same as JSON (`--json FILE`) for tracking over time.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::thousands;
use crate::error::CliError;

/// `--json FILE`, shared by the bench commands.
#[derive(Args, Debug, Clone, Default)]
pub struct SummaryArgs {
    /// Also write the summary (metric, goal, floor, figure, met) as JSON to FILE, for tracking
    /// figures over time.
    #[arg(long = "json", value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Which way a metric improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Throughput: the figure must reach the goal.
    Higher,
    /// Latency, ratios, durations: the figure must stay at or under the goal.
    Lower,
}

/// One line of the summary.
#[derive(Clone, Debug, Serialize)]
pub struct Line {
    pub metric: String,
    pub unit: &'static str,
    pub better: Better,
    /// The goal as a number in `unit`.
    pub goal: f64,
    /// Where the goal comes from, in words (e.g. which of two goals is the lower).
    pub goal_basis: String,
    /// The measured physical limit in `unit`, where one is measured.
    pub floor: Option<f64>,
    pub figure: f64,
    pub met: bool,
}

impl Line {
    pub fn new(
        metric: impl Into<String>,
        unit: &'static str,
        better: Better,
        goal: f64,
        figure: f64,
    ) -> Self {
        let met = match better {
            Better::Higher => figure >= goal,
            Better::Lower => figure <= goal,
        };
        Line {
            metric: metric.into(),
            unit,
            better,
            goal,
            goal_basis: String::new(),
            floor: None,
            figure,
            met,
        }
    }

    pub fn floor(mut self, floor: f64) -> Self {
        self.floor = Some(floor);
        self
    }

    pub fn basis(mut self, basis: impl Into<String>) -> Self {
        self.goal_basis = basis.into();
        self
    }
}

/// The summary of one bench run.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// `gateway`, `audit`, `fixtures`, ...
    pub bench: &'static str,
    pub preflight_version: &'static str,
    /// Seconds since the Unix epoch when the summary was made.
    pub unix_time: u64,
    pub cores: usize,
    /// The 1-minute load average when the summary was made: other work slows every figure.
    pub load_average: Option<f64>,
    pub lines: Vec<Line>,
}

impl Summary {
    pub fn new(bench: &'static str, lines: Vec<Line>) -> Self {
        Summary {
            bench,
            preflight_version: env!("CARGO_PKG_VERSION"),
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_average: load_average(),
            lines,
        }
    }

    /// The table, one line per metric.
    pub fn render(&self) -> String {
        let mut rows = vec![[
            "metric".to_string(),
            "goal".to_string(),
            "floor".to_string(),
            "figure".to_string(),
            "met".to_string(),
        ]];
        for l in &self.lines {
            let op = match l.better {
                Better::Higher => ">=",
                Better::Lower => "<=",
            };
            rows.push([
                l.metric.clone(),
                format!("{op} {} {}", number(l.goal), l.unit),
                l.floor.map_or("-".to_string(), number),
                number(l.figure),
                if l.met { "yes" } else { "NO" }.to_string(),
            ]);
        }
        let widths: Vec<usize> = (0..5)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!("summary ({} bench):\n", self.bench);
        for r in &rows {
            out.push_str(&format!(
                "  {:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}\n",
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
            ));
        }
        for l in self.lines.iter().filter(|l| !l.goal_basis.is_empty()) {
            out.push_str(&format!("  goal of {}: {}\n", l.metric, l.goal_basis));
        }
        out
    }

    /// Prints the table (to stdout, or to stderr where stdout carries JSON) and writes the JSON
    /// file when asked.
    pub fn emit(&self, args: &SummaryArgs) -> Result<(), CliError> {
        self.emit_to(args, false)
    }

    pub fn emit_to(&self, args: &SummaryArgs, stderr: bool) -> Result<(), CliError> {
        if stderr {
            eprint!("\n{}", self.render());
        } else {
            print!("\n{}", self.render());
        }
        if let Some(path) = &args.json {
            self.write_json(path)?;
            eprintln!("summary written to {}", path.display());
        }
        Ok(())
    }

    fn write_json(&self, path: &Path) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| CliError::infra(format!("cannot render the summary: {e}")))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| CliError::config(format!("--json: cannot write {}: {e}", path.display())))
    }
}

/// A figure as text: thousands separators for large numbers, three significant decimals for
/// small ones.
fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.abs() >= 1000.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        format!("{sign}{}", thousands(v.abs().round() as u64))
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn met_follows_the_direction_of_the_goal() {
        assert!(Line::new("a", "records/s", Better::Higher, 100.0, 100.0).met);
        assert!(!Line::new("a", "records/s", Better::Higher, 100.0, 99.9).met);
        assert!(Line::new("b", "s", Better::Lower, 60.0, 59.0).met);
        assert!(!Line::new("b", "s", Better::Lower, 60.0, 72.5).met);
    }

    #[test]
    fn the_table_shows_goal_floor_and_figure_side_by_side() {
        let s = Summary::new(
            "audit",
            vec![
                Line::new(
                    "verify jsonl",
                    "records/s",
                    Better::Higher,
                    500_000.0,
                    216_000.0,
                )
                .floor(1_800_000.0)
                .basis("500,000/s is lower than half the floor"),
                Line::new("load 1M rows", "s", Better::Lower, 60.0, 41.25),
            ],
        );
        let text = s.render();
        let line = text
            .lines()
            .find(|l| l.contains("verify jsonl"))
            .expect("a line for the metric");
        assert!(line.contains(">= 500,000 records/s"), "{line}");
        assert!(line.contains("1,800,000"), "{line}");
        assert!(line.contains("216,000"), "{line}");
        assert!(line.trim_end().ends_with("NO"), "{line}");
        let load = text.lines().find(|l| l.contains("load 1M")).unwrap();
        assert!(
            load.contains("41.2") && load.trim_end().ends_with("yes"),
            "{load}"
        );
        assert!(text.contains("goal of verify jsonl: 500,000/s is lower"));
        assert!(!s.lines[0].met && s.lines[1].met);
    }

    #[test]
    fn the_json_file_holds_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.json");
        let s = Summary::new(
            "fixtures",
            vec![Line::new("load", "s", Better::Lower, 60.0, 30.0)],
        );
        s.write_json(&path).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["bench"], "fixtures");
        assert_eq!(v["lines"][0]["metric"], "load");
        assert_eq!(v["lines"][0]["goal"], 60.0);
        assert_eq!(v["lines"][0]["better"], "lower");
        assert_eq!(v["lines"][0]["met"], true);
        assert!(v["lines"][0]["floor"].is_null());
        let err = s
            .write_json(&dir.path().join("no-such-dir").join("x.json"))
            .unwrap_err();
        assert!(format!("{err:?}").contains("--json"));
    }
}
