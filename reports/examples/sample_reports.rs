//! Shows what the reports look like without a database: writes the six report files for the
//! built-in sample report into a directory, then replays the sample as a live run on stderr
//! (progress bars on a terminal, plain lines otherwise) and prints the summary table.
//!
//! `cargo run -p preflight-reports --example sample_reports -- target/sample-reports`

use std::time::{Duration, Instant};

use preflight_reports::testutil::sample_report;
use preflight_reports::{summary_table, write_all, LiveReporter, ProbeEvent, ProbeEventKind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/sample-reports".into());
    let report = sample_report();

    let start = Instant::now();
    let mut live = LiveReporter::stderr();
    let mut emit = |kind: ProbeEventKind| {
        live.handle(&ProbeEvent {
            elapsed: start.elapsed(),
            kind,
        })
    };
    let summary = report.summary();
    emit(ProbeEventKind::RunStarted {
        environment: Box::new(report.environment.clone()),
        planned: summary
            .families
            .iter()
            .map(|f| (f.family.clone(), f.counts.total()))
            .collect(),
    });
    for fam in &summary.families {
        emit(ProbeEventKind::FamilyStarted {
            family: fam.family.clone(),
            probes: fam.counts.total(),
        });
        for f in report.findings.iter().filter(|f| f.family == fam.family) {
            std::thread::sleep(Duration::from_millis(150));
            emit(ProbeEventKind::ProbeFinished {
                finding: Box::new(f.clone()),
            });
        }
        emit(ProbeEventKind::FamilyFinished {
            family: fam.family.clone(),
        });
    }
    emit(ProbeEventKind::RunFinished {
        tool_calls: report.tool_calls,
    });

    print!("{}", summary_table(&report));
    for p in write_all(&report, dir.as_ref())? {
        println!("wrote {}", p.display());
    }
    Ok(())
}
