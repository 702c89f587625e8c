//! `junit.xml`: what CI systems (GitLab, Jenkins, GitHub test reporters) show as test results.
//! One `<testsuite>` per family, one `<testcase>` per finding (`name` = title, `classname` =
//! probe code); `fail` is a `<failure>`, `error` an `<error>`, `not_verified` is `<skipped>`,
//! each with the message and the evidence text. The run's environment is in `<properties>`.

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::escape::markup;
use crate::model::{Finding, Report, Verdict};
use crate::redact::Scrubbed;
use crate::render::{evidence_text, seconds};

/// An attribute value: newlines kept as character references (parsers turn raw ones into spaces).
fn attr(text: &str) -> String {
    markup(text).replace('\n', "&#10;").replace('\t', "&#9;")
}

/// Writes `junit.xml`.
pub fn render(report: &Report, out: &mut impl Write) -> io::Result<()> {
    out.write_all(render_string(report).as_bytes())
}

pub fn render_string(report: &Report) -> String {
    render_scrubbed(&Scrubbed::new(report))
}

pub(crate) fn render_scrubbed(report: &Scrubbed) -> String {
    let summary = report.summary();
    let t = summary.totals;
    let e = &report.environment;
    let mut x = String::with_capacity(4096 + report.findings.len() * 512);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"preflight {}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\" timestamp=\"{}\">",
        match report.kind {
            crate::model::ReportKind::Probe => "probe",
            crate::model::ReportKind::Agent => "agent",
            crate::model::ReportKind::SelfTest => "self-test",
        },
        t.total(),
        t.fail,
        t.error,
        t.not_verified,
        seconds(report.duration),
        attr(&e.started_at)
    );
    let props: [(&str, &str); 9] = [
        ("preflight_version", &e.preflight_version),
        ("target", &e.target),
        ("policy_path", &e.policy_path),
        ("policy_hash", &e.policy_hash),
        ("fixtures_hash", &e.fixtures_hash),
        ("database_backend", &e.database_backend),
        ("backend_reason", &e.backend_reason),
        ("server_version", &e.server_version),
        ("started_at", &e.started_at),
    ];
    let sorted = report.sorted_findings();
    for fam in &summary.families {
        let c = fam.counts;
        let findings: Vec<&&Finding> = sorted.iter().filter(|f| f.family == fam.family).collect();
        let time: std::time::Duration = findings.iter().map(|f| f.duration).sum();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{}\" timestamp=\"{}\">",
            attr(&fam.family),
            c.total(),
            c.fail,
            c.error,
            c.not_verified,
            seconds(time),
            attr(&e.started_at)
        );
        x.push_str("    <properties>\n");
        for (k, v) in props {
            let _ = writeln!(x, "      <property name=\"{k}\" value=\"{}\"/>", attr(v));
        }
        x.push_str("    </properties>\n");
        for f in findings {
            testcase(&mut x, f);
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

fn testcase(x: &mut String, f: &Finding) {
    let _ = write!(
        x,
        "    <testcase name=\"{}\" classname=\"{}\" time=\"{}\"",
        attr(&f.title),
        attr(&f.code),
        seconds(f.duration)
    );
    if let Some(l) = &f.location {
        // `file`/`line` are read by GitLab and several JUnit viewers to link the policy line.
        let _ = write!(x, " file=\"{}\" line=\"{}\"", attr(&l.path), l.line);
    }
    let element = match f.verdict {
        Verdict::Pass => None,
        Verdict::Fail => Some("failure"),
        Verdict::Error => Some("error"),
        Verdict::NotVerified => Some("skipped"),
    };
    match element {
        None => x.push_str("/>\n"),
        Some(el) => {
            let _ = write!(
                x,
                ">\n      <{el} message=\"{}\" type=\"{}\">{}</{el}>\n    </testcase>\n",
                attr(&f.message),
                attr(&f.code),
                markup(&format!("{}\n\n{}", f.message, evidence_text(f)))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use quick_xml::events::Event;
    use quick_xml::Reader;

    use super::*;
    use crate::testutil::{
        redact_snapshot, sample_report, HOSTILE_TITLE, PLANTED_PASSWORD, PLANTED_TOKEN,
    };

    #[test]
    fn snapshot() {
        insta::assert_snapshot!(
            "junit_xml",
            redact_snapshot(&render_string(&sample_report()))
        );
    }

    #[derive(Debug, Default)]
    struct Case {
        suite: String,
        name: String,
        classname: String,
        outcome: Option<String>,
        message: String,
        body: String,
    }

    /// A suite's name and its tests, failures, errors and skipped counts.
    type Suite = (String, usize, usize, usize, usize);

    /// Parses the document with a strict XML reader and collects the test cases.
    fn parse(xml: &str) -> (Vec<Suite>, Vec<Case>) {
        let mut reader = Reader::from_str(xml);
        reader.config_mut().check_end_names = true;
        let mut suites = Vec::new();
        let mut cases: Vec<Case> = Vec::new();
        let mut suite = String::new();
        let mut in_outcome = false;
        let attr_of = |e: &quick_xml::events::BytesStart, name: &str| -> String {
            e.try_get_attribute(name)
                .unwrap()
                .map(|a| a.unescape_value().unwrap().into_owned())
                .unwrap_or_default()
        };
        loop {
            match reader.read_event().expect("well-formed XML") {
                Event::Eof => break,
                Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                    b"testsuite" => {
                        suite = attr_of(&e, "name");
                        let n = |k: &str| attr_of(&e, k).parse::<usize>().unwrap();
                        suites.push((
                            suite.clone(),
                            n("tests"),
                            n("failures"),
                            n("errors"),
                            n("skipped"),
                        ));
                    }
                    b"testcase" => cases.push(Case {
                        suite: suite.clone(),
                        name: attr_of(&e, "name"),
                        classname: attr_of(&e, "classname"),
                        ..Case::default()
                    }),
                    tag @ (b"failure" | b"error" | b"skipped") => {
                        let c = cases.last_mut().unwrap();
                        c.outcome = Some(String::from_utf8(tag.to_vec()).unwrap());
                        c.message = attr_of(&e, "message");
                        in_outcome = true;
                    }
                    _ => {}
                },
                Event::Text(t) if in_outcome => {
                    cases
                        .last_mut()
                        .unwrap()
                        .body
                        .push_str(&t.decode().unwrap());
                }
                Event::GeneralRef(r) if in_outcome => {
                    let name = r.decode().unwrap();
                    let ch = match name.as_ref() {
                        "lt" => "<".to_string(),
                        "gt" => ">".to_string(),
                        "amp" => "&".to_string(),
                        "quot" => "\"".to_string(),
                        "apos" => "'".to_string(),
                        other => r
                            .resolve_char_ref()
                            .unwrap()
                            .map(String::from)
                            .unwrap_or_else(|| panic!("unknown entity {other}")),
                    };
                    cases.last_mut().unwrap().body.push_str(&ch);
                }
                Event::End(e)
                    if matches!(e.name().as_ref(), b"failure" | b"error" | b"skipped") =>
                {
                    in_outcome = false;
                }
                _ => {}
            }
        }
        (suites, cases)
    }

    #[test]
    fn structure_parses_back() {
        let report = sample_report();
        let xml = render_string(&report);
        let (suites, cases) = parse(&xml);
        let summary = report.summary();
        assert_eq!(suites.len(), summary.families.len());
        for (s, fam) in suites.iter().zip(&summary.families) {
            assert_eq!(s.0, fam.family);
            assert_eq!(
                (s.1, s.2, s.3, s.4),
                (
                    fam.counts.total(),
                    fam.counts.fail,
                    fam.counts.error,
                    fam.counts.not_verified
                )
            );
        }
        assert_eq!(cases.len(), report.findings.len());
        for f in &report.findings {
            let case = cases
                .iter()
                .find(|c| c.classname == f.code && c.suite == f.family)
                .unwrap_or_else(|| panic!("no testcase for {}", f.code));
            let expected = match f.verdict {
                Verdict::Pass => None,
                Verdict::Fail => Some("failure"),
                Verdict::Error => Some("error"),
                Verdict::NotVerified => Some("skipped"),
            };
            assert_eq!(case.outcome.as_deref(), expected, "{}", f.code);
            if expected.is_some() {
                assert_eq!(
                    case.message,
                    crate::escape::visible(&crate::redact::scrub(&f.message))
                );
                assert!(
                    case.body.contains(&f.fingerprint),
                    "evidence missing for {}",
                    f.code
                );
            }
        }
    }

    #[test]
    fn hostile_title_survives_as_text() {
        let xml = render_string(&sample_report());
        let (_, cases) = parse(&xml);
        let hostile = cases
            .iter()
            .find(|c| c.classname == "pii.masked_field_visible")
            .unwrap();
        // Round-trips exactly, except the control characters, which XML 1.0 cannot carry.
        assert_eq!(hostile.name, crate::escape::visible(HOSTILE_TITLE));
        assert!(
            hostile.name.contains("<script>")
                && hostile.name.contains("]]>")
                && hostile.name.contains('|')
        );
        assert!(hostile.body.contains("</pre><script>"));
        assert!(!xml.contains(PLANTED_PASSWORD) && !xml.contains(PLANTED_TOKEN));
        for c in xml.chars() {
            let ok = matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..);
            assert!(ok, "character {c:?} is not allowed in XML 1.0");
        }
    }
}
