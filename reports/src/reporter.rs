//! The terminal: [`LiveReporter`] consumes the runner's [`ProbeEvent`]s and shows a progress bar
//! per family (indicatif) when stderr is a terminal, plain lines otherwise (CI logs);
//! [`summary_table`] renders the end-of-run table (tabled). The runner only emits events; the
//! reporter never calls back.
//!
//! Colour only on a terminal, and never when `NO_COLOR` is set (<https://no-color.org>).
//! Every string from a finding goes through the secret scrubber and has its control characters
//! made visible, so a hostile title cannot move the cursor or clear the screen.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tabled::builder::Builder;
use tabled::settings::object::{Cell, Columns, Rows};
use tabled::settings::{Alignment, Color, Style};

use crate::escape::visible;
use crate::model::{Finding, ProbeEvent, ProbeEventKind, Report, Verdict};
use crate::redact::scrub;
use crate::summary::{Counts, Outcome};

/// True when `NO_COLOR` is absent or empty and the stream is a terminal.
pub fn color_enabled(is_terminal: bool) -> bool {
    color_from(is_terminal, std::env::var_os("NO_COLOR").as_deref())
}

fn color_from(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Terminal-safe text: secrets scrubbed, control characters visible.
fn safe(text: &str) -> String {
    visible(&scrub(text)).into_owned()
}

fn paint(text: &str, color: &Color, on: bool) -> String {
    if on {
        color.colorize(text)
    } else {
        text.to_string()
    }
}

fn verdict_color(v: Verdict) -> Color {
    match v {
        Verdict::Pass => Color::FG_GREEN,
        Verdict::Fail => Color::FG_RED | Color::BOLD,
        Verdict::Error => Color::FG_YELLOW,
        Verdict::NotVerified => Color::FG_MAGENTA,
    }
}

fn verdict_tag(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Error => "ERROR",
        Verdict::NotVerified => "NOT VERIFIED",
    }
}

/// At most `max` characters, with `…` marking a cut (terminal lines have no room for more).
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((i, _)) => format!("{}…", &text[..i]),
    }
}

/// One line for a finding that did not pass.
fn finding_line(f: &Finding, color: bool) -> String {
    format!(
        "{}  {:<8}  {} [{}] {}",
        paint(
            &format!("{:<12}", verdict_tag(f.verdict)),
            &verdict_color(f.verdict),
            color
        ),
        f.severity.as_str(),
        safe(&f.code),
        safe(&f.checklist.join(", ")),
        safe(&clip(&f.title, 120))
    )
}

fn counts_phrase(c: &Counts) -> String {
    let mut parts = vec![format!("{} passed", c.pass)];
    for (n, what) in [
        (c.fail, "failed"),
        (c.error, "errored"),
        (c.not_verified, "not verified"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(", ")
}

struct FamilyState {
    family: String,
    planned: u64,
    counts: Counts,
    started_at: Duration,
    bar: Option<ProgressBar>,
}

enum Mode {
    Bars(MultiProgress),
    Plain(Box<dyn Write + Send>),
}

/// Shows a run's progress from its event stream.
pub struct LiveReporter {
    mode: Mode,
    color: bool,
    families: Vec<FamilyState>,
    totals: Counts,
}

impl LiveReporter {
    /// Bars on stderr when it is a terminal, plain lines on stderr otherwise.
    pub fn stderr() -> LiveReporter {
        let tty = std::io::stderr().is_terminal();
        if tty {
            Self::with_bars(ProgressDrawTarget::stderr(), color_enabled(true))
        } else {
            Self::plain(Box::new(std::io::stderr()))
        }
    }

    /// Plain lines (no colour, no cursor movement) to `out`: for CI logs and tests.
    pub fn plain(out: Box<dyn Write + Send>) -> LiveReporter {
        LiveReporter {
            mode: Mode::Plain(out),
            color: false,
            families: Vec::new(),
            totals: Counts::default(),
        }
    }

    /// Progress bars drawn to `target`.
    pub fn with_bars(target: ProgressDrawTarget, color: bool) -> LiveReporter {
        LiveReporter {
            mode: Mode::Bars(MultiProgress::with_draw_target(target)),
            color,
            families: Vec::new(),
            totals: Counts::default(),
        }
    }

    /// Probes finished, probes planned and verdict counts of `family` so far.
    pub fn progress(&self, family: &str) -> Option<(u64, u64, Counts)> {
        self.families
            .iter()
            .find(|f| f.family == family)
            .map(|f| (f.counts.total() as u64, f.planned, f.counts))
    }

    pub fn totals(&self) -> Counts {
        self.totals
    }

    fn style(&self) -> ProgressStyle {
        let template = if self.color {
            "{prefix:>14.bold} [{bar:32.cyan/blue}] {pos:>5}/{len:<5} {msg}"
        } else {
            "{prefix:>14} [{bar:32}] {pos:>5}/{len:<5} {msg}"
        };
        // The templates are literals; a bad one is a build defect caught by the tests.
        ProgressStyle::with_template(template)
            .expect("progress template is valid")
            .progress_chars("=> ")
    }

    fn line(&mut self, text: &str) {
        match &mut self.mode {
            // A closed stderr or a broken pipe must not stop the run.
            Mode::Plain(out) => {
                let _ = writeln!(out, "{text}");
            }
            Mode::Bars(mp) => {
                let _ = mp.println(text);
            }
        }
    }

    fn family_index(&mut self, family: &str, planned: u64, at: Duration) -> usize {
        if let Some(i) = self.families.iter().position(|f| f.family == family) {
            if planned > 0 && self.families[i].planned != planned {
                self.families[i].planned = planned;
                if let Some(bar) = &self.families[i].bar {
                    bar.set_length(planned);
                }
            }
            return i;
        }
        let bar = match &self.mode {
            Mode::Bars(mp) => {
                let bar = mp.add(ProgressBar::new(planned));
                bar.set_style(self.style());
                bar.set_prefix(safe(family));
                Some(bar)
            }
            Mode::Plain(_) => None,
        };
        self.families.push(FamilyState {
            family: family.to_string(),
            planned,
            counts: Counts::default(),
            started_at: at,
            bar,
        });
        self.families.len() - 1
    }

    /// Consumes one event. Never fails: display problems must not affect the run.
    pub fn handle(&mut self, event: &ProbeEvent) {
        match &event.kind {
            ProbeEventKind::RunStarted {
                environment,
                planned,
            } => {
                let probes: usize = planned.iter().map(|(_, n)| *n).sum();
                let hash: String = environment.policy_hash.chars().take(12).collect();
                self.line(&format!(
                    "preflight: probing {} with policy {} ({hash}) on {}: {probes} probes in {} families",
                    safe(&environment.target),
                    safe(&environment.policy_path),
                    safe(&environment.database_backend),
                    planned.len()
                ));
                for (family, n) in planned {
                    self.family_index(family, *n as u64, event.elapsed);
                }
            }
            ProbeEventKind::FamilyStarted { family, probes } => {
                let i = self.family_index(family, *probes as u64, event.elapsed);
                self.families[i].started_at = event.elapsed;
                if matches!(self.mode, Mode::Plain(_)) {
                    self.line(&format!("{}: {probes} probes", safe(family)));
                }
            }
            ProbeEventKind::ProbeFinished { finding } => {
                let i = self.family_index(&finding.family, 0, event.elapsed);
                self.families[i].counts.add(finding.verdict);
                self.totals.add(finding.verdict);
                let state = &self.families[i];
                if let Some(bar) = &state.bar {
                    if state.counts.total() as u64 > state.planned {
                        bar.set_length(state.counts.total() as u64);
                    }
                    bar.inc(1);
                    let c = state.counts;
                    if c.non_pass() > 0 {
                        bar.set_message(format!(
                            "{} fail, {} error, {} not verified",
                            c.fail, c.error, c.not_verified
                        ));
                    }
                }
                if !finding.verdict.is_pass() {
                    let line = finding_line(finding, self.color);
                    self.line(&line);
                }
            }
            ProbeEventKind::FamilyFinished { family } => {
                let i = self.family_index(family, 0, event.elapsed);
                let state = &self.families[i];
                let took = event.elapsed.saturating_sub(state.started_at);
                let msg = format!(
                    "{} ({:.1} s)",
                    counts_phrase(&state.counts),
                    took.as_secs_f64()
                );
                match &state.bar {
                    Some(bar) => bar.finish_with_message(msg),
                    None => {
                        let text = format!("{}: {msg}", safe(family));
                        self.line(&text);
                    }
                }
            }
            ProbeEventKind::RunFinished { tool_calls } => {
                let t = self.totals;
                let text = format!(
                    "done: {} findings ({}), {tool_calls} tool calls in {:.1} s",
                    t.total(),
                    counts_phrase(&t),
                    event.elapsed.as_secs_f64()
                );
                self.line(&text);
            }
        }
    }
}

/// Most findings listed under the table; the rest are counted and left to report.html.
const MAX_LISTED: usize = 40;

/// The end-of-run summary for stdout: colour when stdout is a terminal and `NO_COLOR` is unset.
pub fn summary_table(report: &Report) -> String {
    summary_table_styled(report, color_enabled(std::io::stdout().is_terminal()))
}

/// The summary with colour decided by the caller.
pub fn summary_table_styled(report: &Report, color: bool) -> String {
    let summary = report.summary();
    let t = summary.totals;
    let mut out = String::new();

    let mut b = Builder::default();
    b.push_record(["family", "pass", "fail", "error", "not verified", "total"]);
    let row = |name: String, c: &Counts| {
        vec![
            name,
            c.pass.to_string(),
            c.fail.to_string(),
            c.error.to_string(),
            c.not_verified.to_string(),
            c.total().to_string(),
        ]
    };
    for f in &summary.families {
        b.push_record(row(safe(&f.family), &f.counts));
    }
    b.push_record(row("total".into(), &t));
    let mut table = b.build();
    table.with(Style::rounded());
    table.modify(Columns::new(1..), Alignment::right());
    if color {
        table.modify(Rows::first(), Color::BOLD);
        let last = summary.families.len() + 1;
        table.modify(Rows::one(last), Color::BOLD);
        for (r, c) in std::iter::once(&t)
            .chain(summary.families.iter().map(|f| &f.counts))
            .enumerate()
        {
            let row = if r == 0 { last } else { r };
            for (col, v) in [
                (2, Verdict::Fail),
                (3, Verdict::Error),
                (4, Verdict::NotVerified),
            ] {
                if c.get(v) > 0 {
                    table.modify(Cell::new(row, col), verdict_color(v));
                }
            }
        }
    }
    out.push_str(&table.to_string());
    out.push('\n');

    let sorted = report.sorted_findings();
    let non_pass: Vec<&&Finding> = sorted.iter().filter(|f| !f.verdict.is_pass()).collect();
    if !non_pass.is_empty() {
        let mut b = Builder::default();
        b.push_record(["verdict", "severity", "probe", "checklist", "title"]);
        for f in non_pass.iter().take(MAX_LISTED) {
            b.push_record([
                verdict_tag(f.verdict).to_lowercase(),
                f.severity.as_str().to_string(),
                safe(&f.code),
                safe(&f.checklist.join(", ")),
                safe(&clip(&f.title, 60)),
            ]);
        }
        let mut table = b.build();
        table.with(Style::rounded());
        if color {
            table.modify(Rows::first(), Color::BOLD);
            for (i, f) in non_pass.iter().take(MAX_LISTED).enumerate() {
                table.modify(Cell::new(i + 1, 0), verdict_color(f.verdict));
            }
        }
        out.push('\n');
        out.push_str(&table.to_string());
        out.push('\n');
        if non_pass.len() > MAX_LISTED {
            out.push_str(&format!(
                "… and {} more not passed: see report.html\n",
                non_pass.len() - MAX_LISTED
            ));
        }
    }

    let outcome = t.outcome();
    let word = match outcome {
        Outcome::Passed => paint("PASSED", &Color::FG_GREEN, color),
        Outcome::Failed | Outcome::Errored | Outcome::Incomplete | Outcome::Empty => paint(
            &outcome.as_str().to_uppercase(),
            &(Color::FG_RED | Color::BOLD),
            color,
        ),
    };
    // The rate is over the probing itself; a report without that time gets none.
    let rate = match report.tool_calls_per_second() {
        Some(r) if !report.probe_duration.is_zero() => format!(
            " ({r:.0} calls/s over {:.1} s of probing)",
            report.probe_duration.as_secs_f64()
        ),
        Some(_) | None => String::new(),
    };
    out.push_str(&format!(
        "\n{word}: {} — {} findings, {} tool calls in {:.1} s{rate}. Only pass is a pass.\n",
        report.headline(),
        t.total(),
        report.tool_calls,
        report.duration.as_secs_f64()
    ));
    out
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::testutil::{redact_snapshot, sample_report, PLANTED_PASSWORD, PLANTED_TOKEN};

    /// A writer the test can read back after the reporter owns a clone of it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn events(report: &Report) -> Vec<ProbeEvent> {
        let summary = report.summary();
        let planned: Vec<(String, usize)> = summary
            .families
            .iter()
            .map(|f| (f.family.clone(), f.counts.total()))
            .collect();
        let mut ms = 0;
        let mut at = || {
            ms += 10;
            Duration::from_millis(ms)
        };
        let mut ev = vec![ProbeEvent {
            elapsed: at(),
            kind: ProbeEventKind::RunStarted {
                environment: Box::new(report.environment.clone()),
                planned: planned.clone(),
            },
        }];
        for (family, n) in planned {
            ev.push(ProbeEvent {
                elapsed: at(),
                kind: ProbeEventKind::FamilyStarted {
                    family: family.clone(),
                    probes: n,
                },
            });
            for f in report.findings.iter().filter(|f| f.family == family) {
                ev.push(ProbeEvent {
                    elapsed: at(),
                    kind: ProbeEventKind::ProbeFinished {
                        finding: Box::new(f.clone()),
                    },
                });
            }
            ev.push(ProbeEvent {
                elapsed: at(),
                kind: ProbeEventKind::FamilyFinished { family },
            });
        }
        ev.push(ProbeEvent {
            elapsed: at(),
            kind: ProbeEventKind::RunFinished { tool_calls: 42 },
        });
        ev
    }

    #[test]
    fn plain_lines_snapshot() {
        let report = sample_report();
        let out = Shared::default();
        let mut r = LiveReporter::plain(Box::new(out.clone()));
        for e in events(&report) {
            r.handle(&e);
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(
            !text.contains('\u{1b}'),
            "no escape sequences in plain mode"
        );
        assert!(!text.contains(PLANTED_PASSWORD) && !text.contains(PLANTED_TOKEN));
        // One line per non-pass finding.
        let non_pass = report
            .findings
            .iter()
            .filter(|f| !f.verdict.is_pass())
            .count();
        let tagged = text
            .lines()
            .filter(|l| {
                ["FAIL", "ERROR", "NOT VERIFIED"]
                    .iter()
                    .any(|t| l.trim_start().starts_with(t))
            })
            .count();
        assert_eq!(tagged, non_pass);
        assert_eq!(r.totals(), report.summary().totals);
        insta::with_settings!({snapshot_path => "render/snapshots"}, {
            insta::assert_snapshot!("live_plain", redact_snapshot(&text));
        });
    }

    #[test]
    fn bars_track_each_family() {
        let report = sample_report();
        let mut r = LiveReporter::with_bars(ProgressDrawTarget::hidden(), false);
        for e in events(&report) {
            r.handle(&e);
        }
        for f in report.summary().families {
            let (done, planned, counts) = r.progress(&f.family).unwrap();
            assert_eq!(done, f.counts.total() as u64);
            assert_eq!(planned, done);
            assert_eq!(counts, f.counts);
        }
        // A probe of a family never announced still gets a bar.
        let mut late = report.findings[0].clone();
        late.family = "late".into();
        r.handle(&ProbeEvent {
            elapsed: Duration::from_secs(1),
            kind: ProbeEventKind::ProbeFinished {
                finding: Box::new(late),
            },
        });
        assert_eq!(r.progress("late").map(|p| p.0), Some(1));
    }

    #[test]
    fn summary_table_without_colour_snapshot() {
        let text = summary_table_styled(&sample_report(), false);
        assert!(!text.contains('\u{1b}'));
        assert!(!text.contains('\u{7}') && !text.contains('\u{202e}'));
        insta::with_settings!({snapshot_path => "render/snapshots"}, {
            insta::assert_snapshot!("summary_table", redact_snapshot(&text));
        });
    }

    #[test]
    fn colour_only_when_asked() {
        let coloured = summary_table_styled(&sample_report(), true);
        assert!(coloured.contains("\u{1b}[31m"));
        // Without colour the layout is the same once escapes are stripped.
        let plain = summary_table_styled(&sample_report(), false);
        let stripped = regex::Regex::new("\u{1b}\\[[0-9;]*m")
            .unwrap()
            .replace_all(&coloured, "");
        assert_eq!(stripped, plain);
        assert!(!color_enabled(false));
        assert!(color_from(true, None));
        assert!(color_from(true, Some(std::ffi::OsStr::new(""))));
        assert!(!color_from(true, Some(std::ffi::OsStr::new("1"))));
        assert!(!color_from(false, None));
    }
}
