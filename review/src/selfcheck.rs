//! The review checked against a log whose answers are known: what the generator planted
//! ([`Planted`]) against what the review found ([`Review`]), item by item.
//!
//! The main function is [`compare`]. It is what `preflight probe` runs on a short generated
//! quarter through the layer under test: an item holds only when the review found exactly what
//! was planted, so a layer whose audit records lose what the review needs (the denial's code, the
//! call's duration, the write's reason, the records themselves) fails the item it breaks, with
//! the difference as evidence.

use std::collections::BTreeMap;

use crate::generate::{Planted, MISBEHAVING, SLOW_TOOL};
use crate::model::{Review, Sections};
use crate::reasons::REUSE_MIN_WRITES;

/// The planted spread denial: a model the policy does not have, read by every principal.
const SPREAD_MODEL: &str = "staff_salaries";
const SPREAD_CODE: &str = "model_not_allowed";
/// The planted top denial: a filter on a denied field.
const TOP_CODE: &str = "field_denied";

/// One item of the comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemCheck {
    /// The checklist item (`QRT-2`, …, `OPS-8`).
    pub item: &'static str,
    /// What the review answered, in words.
    pub found: Vec<String>,
    /// Where that differs from the plant; empty when the review found exactly what was planted.
    pub differences: Vec<String>,
}

impl ItemCheck {
    fn new(item: &'static str) -> Self {
        Self {
            item,
            found: Vec::new(),
            differences: Vec::new(),
        }
    }

    fn expect<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, found: T, planted: T) {
        if found != planted {
            self.differences.push(format!(
                "{what}: the review found {found:?}, planted {planted:?}"
            ));
        }
    }
}

/// The items, in checklist order.
pub const ITEMS: [&str; 5] = ["QRT-2", "QRT-3", "QRT-4", "QRT-5", "OPS-8"];

/// Compares the review with the plants; one [`ItemCheck`] per item of [`ITEMS`].
pub fn compare(review: &Review, planted: &Planted) -> Vec<ItemCheck> {
    let Some(s) = review.sections.as_ref().filter(|_| review.chain.verified) else {
        let why = format!(
            "the generated log does not verify ({}), so the review did not review it",
            review
                .chain
                .first_break
                .as_deref()
                .unwrap_or("a broken link")
        );
        return ITEMS
            .iter()
            .map(|item| ItemCheck {
                item,
                found: Vec::new(),
                differences: vec![why.clone()],
            })
            .collect();
    };
    let mut out = vec![
        denials(s, planted),
        latency(s),
        reasons(s, planted),
        suite(s),
        alerts(s, planted),
    ];
    // Records the layer did not write are missing from every section.
    if review.chain.records < planted.records || planted.records == 0 {
        for c in &mut out {
            c.differences.insert(
                0,
                format!(
                    "the review's chain holds {} records; the layer wrote {} for the calls of the generated quarter",
                    review.chain.records, planted.records
                ),
            );
        }
    }
    out
}

fn denials(s: &Sections, p: &Planted) -> ItemCheck {
    let mut c = ItemCheck::new("QRT-2");
    let principal = format!("{}/{}", MISBEHAVING.0, MISBEHAVING.1);
    match s.qrt2_denials.top.first() {
        None => c.differences.push(format!(
            "the review found no denial; planted {} {TOP_CODE} denials of db_query on customers.ssn",
            p.top_denial.count
        )),
        Some(top) => {
            c.found.push(format!(
                "top denial: {} {} of {} on {}.{}, {} ({} by {})",
                top.count,
                top.code,
                top.tool,
                top.model,
                top.field,
                top.pattern,
                top.top_principal_count,
                top.top_principal
            ));
            c.expect(
                "the top denial",
                (
                    top.code.as_str(),
                    top.tool.as_str(),
                    top.model.as_str(),
                    top.field.as_str(),
                ),
                (TOP_CODE, "db_query", "customers", "ssn"),
            );
            c.expect("its count", top.count, p.top_denial.count);
            c.expect(
                "its top principal",
                (top.top_principal.as_str(), top.top_principal_count),
                (principal.as_str(), p.top_denial.by_principal),
            );
            c.expect("its pattern", top.pattern.as_str(), "concentrated");
        }
    }
    if p.top_denial.code != TOP_CODE {
        c.differences.push(format!(
            "the layer answered the planted ssn filters with {:?}, not {TOP_CODE}",
            p.top_denial.code
        ));
    }
    match s.qrt2_denials.top.iter().find(|g| g.model == SPREAD_MODEL) {
        None => c.differences.push(format!(
            "the review lists no denial of {SPREAD_MODEL}; planted {SPREAD_CODE} denials spread across every principal"
        )),
        Some(g) => {
            c.found.push(format!(
                "spread denial: {} {} on {} across {} principals, {}",
                g.count, g.code, g.model, g.principals, g.pattern
            ));
            c.expect(
                "the spread denial",
                (g.code.as_str(), g.pattern.as_str()),
                (SPREAD_CODE, "spread"),
            );
        }
    }
    c
}

fn latency(s: &Sections) -> ItemCheck {
    let mut c = ItemCheck::new("QRT-3");
    let flagged = &s.qrt3_latency.flagged;
    c.found = if flagged.is_empty() {
        vec!["no tool flagged as slow".into()]
    } else {
        flagged.clone()
    };
    let tools: Vec<&str> = flagged
        .iter()
        .map(|f| f.split_whitespace().next().unwrap_or(""))
        .collect();
    c.expect("the tools flagged as slow", tools, vec![SLOW_TOOL]);
    c
}

fn reasons(s: &Sections, p: &Planted) -> ItemCheck {
    let mut c = ItemCheck::new("QRT-4");
    let q = &s.qrt4_reasons;
    let planted = |k: &str| p.bad_reasons.get(k).copied().unwrap_or(0);
    let got = |k: &str| q.by_rule.get(k).copied().unwrap_or(0);
    let bad: u64 = p.bad_reasons.values().sum();
    c.found.push(format!(
        "{} writes, {} coherent; failing by rule: {:?}",
        q.writes, q.coherent, q.by_rule
    ));
    if bad == 0 || p.good_reasons == 0 {
        c.differences.push(format!(
            "the layer allowed {} planted incoherent and {} coherent writes: nothing to tell apart",
            bad, p.good_reasons
        ));
    }
    if planted("reused") < REUSE_MIN_WRITES as u64 {
        c.differences.push(format!(
            "only {} writes with the reused reason were allowed (the rule needs {REUSE_MIN_WRITES})",
            planted("reused")
        ));
    }
    c.expect("incoherent writes", q.writes - q.coherent, bad);
    c.expect("coherent writes", q.coherent, p.good_reasons);
    // Short texts also name nothing; a reused text may also be short or unnamed elsewhere.
    let expected: BTreeMap<&str, u64> = BTreeMap::from([
        ("missing", 0),
        ("placeholder", planted("placeholder")),
        ("too_short", planted("too_short")),
        ("unnamed", planted("unnamed") + planted("too_short")),
    ]);
    for (rule, n) in expected {
        c.expect(&format!("writes failing `{rule}`"), got(rule), n);
    }
    if got("reused") < planted("reused") {
        c.differences.push(format!(
            "writes failing `reused`: the review found {}, planted at least {}",
            got("reused"),
            planted("reused")
        ));
    }
    c
}

fn suite(s: &Sections) -> ItemCheck {
    let mut c = ItemCheck::new("QRT-5");
    let q = &s.qrt5_suite;
    c.found
        .push(format!("the regression suite: {} ({})", q.status, q.detail));
    if q.status != "passed" || q.passed == 0 {
        c.differences.push(format!(
            "the regression suite {}: {}{}",
            q.status,
            q.detail,
            q.failures
                .first()
                .map(|f| format!("; first failure: {f}"))
                .unwrap_or_default()
        ));
    }
    c
}

fn alerts(s: &Sections, p: &Planted) -> ItemCheck {
    let mut c = ItemCheck::new("OPS-8");
    let fired = |name: &str| -> Vec<(String, String)> {
        s.ops8_alerts
            .iter()
            .find(|a| a.name == name)
            .map(|a| {
                a.fired
                    .iter()
                    .map(|f| (f.from.clone(), f.to.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    for a in &s.ops8_alerts {
        for f in &a.fired {
            c.found.push(format!(
                "{} fired {} – {} ({})",
                a.name, f.from, f.to, f.value
            ));
        }
    }
    if c.found.is_empty() {
        c.found.push("no alert fired".into());
    }
    let starts = |name: &str| -> Vec<String> { fired(name).into_iter().map(|f| f.0).collect() };
    c.expect(
        "the denial spike alert",
        starts("denial spike"),
        vec![p.denial_spike_hour.clone()],
    );
    c.expect(
        "the write rate alert",
        starts("write rate above baseline"),
        vec![p.write_spike_hour.clone()],
    );
    let gap = fired("audit sink gap");
    // The gap alert spans the last record before the gap to the first after it.
    let covers = gap.len() == 1 && gap[0].0 <= p.gap_from && gap[0].1 >= p.gap_to;
    if !covers {
        c.differences.push(format!(
            "the audit sink gap alert: the review found {gap:?}, planted one window covering {} – {}",
            p.gap_from, p.gap_to
        ));
    }
    c.expect(
        "the statement timeout alert",
        starts("statement timeouts"),
        Vec::new(),
    );
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChainStatus, Window};

    #[test]
    fn a_log_that_does_not_verify_differs_on_every_item() {
        let review = Review {
            source: "jsonl:x".into(),
            window: Window {
                from: "a".into(),
                to: "b".into(),
                since: "90d".into(),
            },
            chain: ChainStatus {
                verified: false,
                records: 3,
                first_break: Some("record 2: edited".into()),
            },
            sections: None,
            attention: Vec::new(),
        };
        let checks = compare(&review, &Planted::default());
        assert_eq!(checks.iter().map(|c| c.item).collect::<Vec<_>>(), ITEMS);
        assert!(checks
            .iter()
            .all(|c| c.differences.len() == 1 && c.differences[0].contains("record 2: edited")));
    }
}
