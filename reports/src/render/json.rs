//! `report.json` (the machine-readable report, versioned by `schema_version`) and the JSONL
//! stream ([`JsonlWriter`]: one finding per line, flushed as probes finish).
//!
//! Shape of `report.json` (schema version [`REPORT_SCHEMA_VERSION`]): `schema_version`, `kind`,
//! `environment`, `summary` (totals and per-family counts, derived), `duration` (milliseconds,
//! start to report), `probes` (findings, derived), `tool_calls`, `probe_duration` (milliseconds
//! the probes ran), `tool_calls_per_second` (over `probe_duration`, one decimal, derived; absent
//! without calls), `findings` (each with its evidence; `duration` in milliseconds), and for agent
//! reports `attempts` (each attempt's transcript and checks, with whose failure each was). Everything
//! but the derived fields deserialises back into [`Report`].

use std::io::{self, Write};

use serde::Serialize;

use crate::model::{
    AttemptRecord, Finding, ProbeEvent, ProbeEventKind, Report, ReportKind, RunEnvironment,
};
use crate::redact::{scrub_finding, Scrubbed};
use crate::summary::Summary;
use crate::REPORT_SCHEMA_VERSION;

#[derive(Serialize)]
struct JsonReport<'a> {
    schema_version: u32,
    kind: ReportKind,
    environment: &'a RunEnvironment,
    summary: Summary,
    /// Milliseconds.
    duration: u64,
    probes: usize,
    tool_calls: u64,
    /// Milliseconds.
    probe_duration: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls_per_second: Option<f64>,
    findings: Vec<&'a Finding>,
    /// Agent reports: every attempt with its transcript and judged checks.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    attempts: &'a [AttemptRecord],
}

/// Writes `report.json`: pretty-printed, findings in reading order (failures first).
pub fn render(report: &Report, out: &mut impl Write) -> io::Result<()> {
    render_scrubbed(&Scrubbed::new(report), out)
}

pub(crate) fn render_scrubbed(report: &Scrubbed, out: &mut impl Write) -> io::Result<()> {
    let doc = JsonReport {
        schema_version: report.schema_version,
        kind: report.kind,
        environment: &report.environment,
        summary: report.summary(),
        duration: report.duration.as_millis() as u64,
        probes: report.findings.len(),
        tool_calls: report.tool_calls,
        probe_duration: report.probe_duration.as_millis() as u64,
        tool_calls_per_second: report
            .tool_calls_per_second()
            .map(|r| (r * 10.0).round() / 10.0),
        findings: report.sorted_findings(),
        attempts: &report.attempts,
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    out.write_all(b"\n")
}

/// Streams findings as JSON Lines while a run is in progress: each line is one finding object
/// (the same shape as in `report.json`) with a `schema_version`, written and flushed at once so
/// `tail -f` and log shippers see it immediately.
pub struct JsonlWriter<W: Write> {
    out: W,
}

#[derive(Serialize)]
struct Line<'a> {
    schema_version: u32,
    #[serde(flatten)]
    finding: &'a Finding,
}

impl<W: Write> JsonlWriter<W> {
    pub fn new(out: W) -> Self {
        JsonlWriter { out }
    }

    pub fn write_finding(&mut self, finding: &Finding) -> io::Result<()> {
        let mut finding = finding.clone();
        scrub_finding(&mut finding);
        let line = Line {
            schema_version: REPORT_SCHEMA_VERSION,
            finding: &finding,
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    /// Writes a line for each finished probe; other events carry no finding.
    pub fn write_event(&mut self, event: &ProbeEvent) -> io::Result<()> {
        match &event.kind {
            ProbeEventKind::ProbeFinished { finding } => self.write_finding(finding),
            ProbeEventKind::RunStarted { .. }
            | ProbeEventKind::FamilyStarted { .. }
            | ProbeEventKind::FamilyFinished { .. }
            | ProbeEventKind::RunFinished { .. } => Ok(()),
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// All of a finished report's findings as JSON Lines.
pub fn render_jsonl(report: &Report, out: &mut impl Write) -> io::Result<()> {
    let mut w = JsonlWriter::new(out);
    for f in report.sorted_findings() {
        w.write_finding(f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testutil::{redact_snapshot, sample_report, PLANTED_PASSWORD, PLANTED_TOKEN};

    fn rendered() -> String {
        let mut buf = Vec::new();
        render(&sample_report(), &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn snapshot() {
        insta::assert_snapshot!("report_json", redact_snapshot(&rendered()));
    }

    #[test]
    fn round_trips_into_the_model() {
        let text = rendered();
        let back: Report = serde_json::from_str(&text).unwrap();
        let mut expected = crate::redact::scrub_report(&sample_report());
        expected.findings.sort_by(crate::summary::finding_cmp);
        assert_eq!(back, expected);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema_version"], REPORT_SCHEMA_VERSION);
        assert_eq!(v["summary"]["totals"]["fail"], 3);
        assert_eq!(v["duration"], 4321);
        assert_eq!(v["probes"], sample_report().findings.len());
        assert_eq!(v["probe_duration"], 3000);
        assert_eq!(v["tool_calls_per_second"], 14.0);
        assert_eq!(v["environment"]["policy_hash"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn secrets_never_appear() {
        let text = rendered();
        assert!(!text.contains(PLANTED_PASSWORD));
        assert!(!text.contains(PLANTED_TOKEN));
        assert!(text.contains("postgres://agent:****@db.internal"));
    }

    #[test]
    fn jsonl_one_line_per_finding_from_events() {
        let report = sample_report();
        let mut w = JsonlWriter::new(Vec::new());
        w.write_event(&ProbeEvent {
            elapsed: Duration::ZERO,
            kind: ProbeEventKind::FamilyStarted {
                family: "pii".into(),
                probes: 2,
            },
        })
        .unwrap();
        for f in &report.findings {
            w.write_event(&ProbeEvent {
                elapsed: Duration::from_millis(5),
                kind: ProbeEventKind::ProbeFinished {
                    finding: Box::new(f.clone()),
                },
            })
            .unwrap();
        }
        let text = String::from_utf8(w.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), report.findings.len());
        for (line, f) in lines.iter().zip(&report.findings) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["schema_version"], REPORT_SCHEMA_VERSION);
            assert_eq!(v["code"], f.code.as_str());
            assert_eq!(v["verdict"], f.verdict.as_str());
        }
        assert!(!text.contains(PLANTED_PASSWORD) && !text.contains(PLANTED_TOKEN));

        let mut buf = Vec::new();
        render_jsonl(&report, &mut buf).unwrap();
        insta::assert_snapshot!(
            "report_jsonl",
            redact_snapshot(&String::from_utf8(buf).unwrap())
        );
    }
}
