//! Verdict counts for a whole report and per family ([`Report::summary`]), and the one order in
//! which every renderer lists families and findings, so the formats agree with one another.

use std::cmp::Ordering;

use serde::Serialize;

use crate::model::{Finding, Report, Verdict};

/// The families in the order the runner plans them; unknown families follow alphabetically.
pub const FAMILY_ORDER: [&str; 10] = [
    "cross_tenant",
    "pii",
    "budget",
    "write",
    "approval",
    "audit",
    "hygiene",
    "lint",
    "sql",
    "agent",
];

/// How many findings ended in each verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pass: usize,
    pub fail: usize,
    pub error: usize,
    pub not_verified: usize,
}

impl Counts {
    pub fn add(&mut self, verdict: Verdict) {
        *self.get_mut(verdict) += 1;
    }

    pub fn get(&self, verdict: Verdict) -> usize {
        match verdict {
            Verdict::Pass => self.pass,
            Verdict::Fail => self.fail,
            Verdict::Error => self.error,
            Verdict::NotVerified => self.not_verified,
        }
    }

    fn get_mut(&mut self, verdict: Verdict) -> &mut usize {
        match verdict {
            Verdict::Pass => &mut self.pass,
            Verdict::Fail => &mut self.fail,
            Verdict::Error => &mut self.error,
            Verdict::NotVerified => &mut self.not_verified,
        }
    }

    pub fn total(&self) -> usize {
        self.pass + self.fail + self.error + self.not_verified
    }

    pub fn non_pass(&self) -> usize {
        self.fail + self.error + self.not_verified
    }

    /// The run's outcome in one word. An empty run is not a pass: nothing was verified.
    pub fn outcome(&self) -> Outcome {
        if self.total() == 0 {
            Outcome::Empty
        } else if self.fail > 0 {
            Outcome::Failed
        } else if self.error > 0 {
            Outcome::Errored
        } else if self.not_verified > 0 {
            Outcome::Incomplete
        } else {
            Outcome::Passed
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    Failed,
    Errored,
    Incomplete,
    Empty,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Errored => "errored",
            Outcome::Incomplete => "incomplete",
            Outcome::Empty => "empty",
        }
    }

    /// A sentence for headers.
    pub fn headline(self) -> &'static str {
        match self {
            Outcome::Passed => "every probe passed",
            Outcome::Failed => "enforcement failures found",
            Outcome::Errored => "some probes could not run",
            Outcome::Incomplete => "some claims were not verified",
            Outcome::Empty => "no probes ran: nothing was verified",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FamilySummary {
    pub family: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub totals: Counts,
    /// In [`family_cmp`] order.
    pub families: Vec<FamilySummary>,
}

/// The evidence fact prefix by which a finding says whose failure it is (`failure kind: layer:
/// why`, `failure kind: agent: why`, `failure kind: harness: why`); the agent harness writes
/// it, [`Report::headline`] reads it.
pub const FAILURE_KIND_FACT: &str = "failure kind: ";

impl Report {
    /// The failure kinds (`layer`, `agent`, `harness`) the findings that did not pass name.
    pub fn failure_kinds(&self) -> std::collections::BTreeSet<String> {
        self.findings
            .iter()
            .filter(|f| f.verdict != crate::Verdict::Pass)
            .flat_map(|f| &f.evidence.facts)
            .filter_map(|fact| fact.strip_prefix(FAILURE_KIND_FACT))
            .filter_map(|rest| rest.split(':').next())
            .map(str::to_string)
            .collect()
    }

    /// The run's outcome as a sentence for headers. An agent report whose findings say whose
    /// failure they are names those kinds: "the layer leaked" only when a leak check failed as a
    /// layer failure, "the agent failed" and "the harness failed" for the others.
    pub fn headline(&self) -> String {
        let outcome = self.summary().totals.outcome();
        let kinds = self.failure_kinds();
        if self.kind != crate::ReportKind::Agent || kinds.is_empty() {
            return outcome.headline().to_string();
        }
        let leaked = self.findings.iter().any(|f| {
            f.verdict == crate::Verdict::Fail
                && matches!(f.code.as_str(), "agent.cross_tenant" | "agent.secrets")
                && f.evidence
                    .facts
                    .iter()
                    .any(|x| x.starts_with(&format!("{FAILURE_KIND_FACT}layer")))
        });
        let mut parts = Vec::new();
        if leaked {
            parts.push("the layer leaked");
        } else if kinds.contains("layer") {
            parts.push("the layer failed to enforce");
        }
        if kinds.contains("agent") {
            parts.push("the agent failed");
        }
        if kinds.contains("harness") {
            parts.push("the harness failed");
        }
        let mut line = format!("failures found: {}", parts.join("; "));
        if !kinds.contains("layer") {
            line.push_str(" (no layer failure found)");
        }
        line
    }

    /// Verdict counts in total and per family.
    pub fn summary(&self) -> Summary {
        let mut totals = Counts::default();
        let mut families: Vec<FamilySummary> = Vec::new();
        for f in &self.findings {
            totals.add(f.verdict);
            match families.iter_mut().find(|s| s.family == f.family) {
                Some(s) => s.counts.add(f.verdict),
                None => {
                    let mut counts = Counts::default();
                    counts.add(f.verdict);
                    families.push(FamilySummary {
                        family: f.family.clone(),
                        counts,
                    });
                }
            }
        }
        families.sort_by(|a, b| family_cmp(&a.family, &b.family));
        Summary { totals, families }
    }

    /// Findings in reading order: see [`finding_cmp`].
    pub fn sorted_findings(&self) -> Vec<&Finding> {
        let mut v: Vec<&Finding> = self.findings.iter().collect();
        v.sort_by(|a, b| finding_cmp(a, b));
        v
    }
}

/// Known families in [`FAMILY_ORDER`], then the rest alphabetically.
pub fn family_cmp(a: &str, b: &str) -> Ordering {
    let rank = |f: &str| {
        FAMILY_ORDER
            .iter()
            .position(|k| *k == f)
            .unwrap_or(FAMILY_ORDER.len())
    };
    rank(a).cmp(&rank(b)).then_with(|| a.cmp(b))
}

/// Failures first, then errors, then not verified, then passes; within each, the most severe
/// first, then by family, code and title so the order is stable across runs.
pub fn verdict_rank(v: Verdict) -> u8 {
    match v {
        Verdict::Fail => 0,
        Verdict::Error => 1,
        Verdict::NotVerified => 2,
        Verdict::Pass => 3,
    }
}

pub fn finding_cmp(a: &Finding, b: &Finding) -> Ordering {
    verdict_rank(a.verdict)
        .cmp(&verdict_rank(b.verdict))
        .then_with(|| b.severity.cmp(&a.severity))
        .then_with(|| family_cmp(&a.family, &b.family))
        .then_with(|| a.code.cmp(&b.code))
        .then_with(|| a.title.cmp(&b.title))
        .then_with(|| a.fingerprint.cmp(&b.fingerprint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::sample_report;

    #[test]
    fn counts_per_family_and_total() {
        let r = sample_report();
        let s = r.summary();
        assert_eq!(s.totals.total(), r.findings.len());
        for v in Verdict::ALL {
            assert_eq!(s.totals.get(v), r.count(v));
            let by_family: usize = s.families.iter().map(|f| f.counts.get(v)).sum();
            assert_eq!(by_family, r.count(v));
        }
        let names: Vec<&str> = s.families.iter().map(|f| f.family.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_by(|a, b| family_cmp(a, b));
        assert_eq!(names, sorted);
        assert_eq!(s.totals.outcome(), Outcome::Failed);
    }

    #[test]
    fn outcome_precedence() {
        let c = |pass, fail, error, not_verified| Counts {
            pass,
            fail,
            error,
            not_verified,
        };
        assert_eq!(c(0, 0, 0, 0).outcome(), Outcome::Empty);
        assert_eq!(c(3, 0, 0, 0).outcome(), Outcome::Passed);
        assert_eq!(c(3, 0, 0, 1).outcome(), Outcome::Incomplete);
        assert_eq!(c(3, 0, 1, 1).outcome(), Outcome::Errored);
        assert_eq!(c(3, 1, 1, 1).outcome(), Outcome::Failed);
    }

    #[test]
    fn unknown_families_sort_after_known_ones() {
        assert_eq!(family_cmp("pii", "cross_tenant"), Ordering::Greater);
        assert_eq!(family_cmp("agent", "zz_custom"), Ordering::Less);
        assert_eq!(family_cmp("aa_custom", "zz_custom"), Ordering::Less);
    }

    #[test]
    fn sorted_findings_put_failures_first() {
        let r = sample_report();
        let sorted = r.sorted_findings();
        let ranks: Vec<u8> = sorted.iter().map(|f| verdict_rank(f.verdict)).collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
        assert_eq!(sorted[0].verdict, Verdict::Fail);
    }
}
