//! The SHA-256 floor of audit verification on this machine: how many chain hashes per second
//! the CPU can compute at all, on the very bytes the verifier hashes
//! (`prev_hash || '|' || payload` of each record), on one thread and on as many threads as the
//! verifier uses. Verification cannot beat it; the gap between it and the verify figure is what
//! parsing, reading and the chain check cost.

use std::time::Instant;

use preflight_enforcer::audit::canonical::{
    chain_hash_bytes, normalize_record, ChainedRecord, GENESIS_HASH,
};
use preflight_enforcer::audit::AuditRecord;
use serde::Serialize;

use crate::error::CliError;

/// Records hashed per measurement: enough for a steady rate, small enough to hold in memory.
pub const SAMPLE: usize = 200_000;
/// Each measurement is repeated and the fastest kept (a floor is the best the machine does).
const REPEATS: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct HashFloor {
    /// Records in the sample.
    pub records: usize,
    /// Mean bytes hashed per record.
    pub bytes_per_record: f64,
    pub single_thread_records_per_second: f64,
    /// Threads of the multi-threaded measurement (the verifier's count).
    pub threads: usize,
    pub threaded_records_per_second: f64,
}

/// The verifier's worker count (`audit::workers::verify_threads`): the machine's parallelism,
/// at most 4; one thread here where the verifier works inline.
pub fn verifier_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
}

/// Measures the floor on `records` (the chain's own records, at most [`SAMPLE`] of them).
pub fn measure(records: &[ChainedRecord]) -> HashFloor {
    let sample = &records[..records.len().min(SAMPLE)];
    // The hash inputs, built before any clock starts, as (prev_hash, payload) pairs.
    let inputs: Vec<(String, String)> = sample
        .iter()
        .map(|r| (r.prev_hash.clone(), r.payload()))
        .collect();
    let bytes: usize = inputs.iter().map(|(p, q)| p.len() + 1 + q.len()).sum();
    let threads = verifier_threads();
    let single = best_rate(&inputs, 1);
    let threaded = if threads > 1 {
        best_rate(&inputs, threads)
    } else {
        single
    };
    HashFloor {
        records: inputs.len(),
        bytes_per_record: bytes as f64 / inputs.len().max(1) as f64,
        single_thread_records_per_second: single,
        threads,
        threaded_records_per_second: threaded,
    }
}

/// The fastest of [`REPEATS`] runs hashing every input once on `threads` threads, in records/s.
fn best_rate(inputs: &[(String, String)], threads: usize) -> f64 {
    let chunk = inputs.len().div_ceil(threads.max(1)).max(1);
    (0..REPEATS)
        .map(|_| {
            let t0 = Instant::now();
            let checksum: u64 = std::thread::scope(|s| {
                let handles: Vec<_> = inputs
                    .chunks(chunk)
                    .map(|part| {
                        s.spawn(move || {
                            part.iter().fold(0u64, |acc, (prev, payload)| {
                                let d = chain_hash_bytes(prev.as_bytes(), payload.as_bytes());
                                acc.wrapping_add(u64::from(d[0]))
                            })
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or(0))
                    .fold(0, u64::wrapping_add)
            });
            // Keeps the digests observable so the hashing cannot be optimized away.
            std::hint::black_box(checksum);
            inputs.len() as f64 / t0.elapsed().as_secs_f64().max(1e-9)
        })
        .fold(0.0, f64::max)
}

/// The floor over the first [`SAMPLE`] records of the verify chains, sealed as a sink
/// seals them (same fields, same payload shape), off the async executor.
pub async fn of_bench_records(
    verify_records: u64,
    bench_record: fn(u64) -> AuditRecord,
) -> Result<HashFloor, CliError> {
    let n = verify_records.clamp(1, SAMPLE as u64);
    tokio::task::spawn_blocking(move || {
        let mut prev = GENESIS_HASH.to_string();
        let records: Vec<ChainedRecord> = (0..n)
            .map(|i| {
                let r = normalize_record(&bench_record(i));
                let sealed = ChainedRecord::seal(
                    &r,
                    i as i64 + 1,
                    "2026-01-01T00:00:00.000000Z".to_string(),
                    "preflight_audit_writer".to_string(),
                    std::mem::take(&mut prev),
                );
                prev = sealed.hash.clone();
                sealed
            })
            .collect();
        measure(&records)
    })
    .await
    .map_err(|e| CliError::infra(format!("the SHA-256 floor measurement stopped: {e}")))
}

/// The verify goal of issue 15: at least `fixed` records/s, or within 2x of the floor, whichever
/// is lower. Returns the goal and which of the two it is, in words.
pub fn verify_goal(fixed: f64, floor: f64) -> (f64, String) {
    let half = floor / 2.0;
    if half < fixed {
        (
            half,
            format!(
                "half the SHA-256 floor ({} records/s / 2), lower than the fixed {} records/s",
                super::thousands(floor.round() as u64),
                super::thousands(fixed as u64)
            ),
        )
    } else {
        (
            fixed,
            format!(
                "the fixed {} records/s, lower than half the SHA-256 floor ({} records/s / 2)",
                super::thousands(fixed as u64),
                super::thousands(floor.round() as u64)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use preflight_enforcer::audit::Decision;
    use serde_json::json;

    fn record(i: i64, prev: String) -> ChainedRecord {
        let r = AuditRecord {
            trace_id: format!("{i:032x}"),
            tenant_id: "acme".into(),
            user_id: "u".into(),
            roles: vec!["support".into()],
            tool: "db_get".into(),
            arguments: json!({"model": "orders", "id": i}),
            arguments_sha256: String::new(),
            decision: Decision::Allow,
            error_code: None,
            rows_returned: Some(1),
            rows_affected: None,
            duration_ms: 0.5,
            reason: None,
            approval_id: None,
            approver: None,
            policy_hash: "p".into(),
            subjects: vec![],
        };
        ChainedRecord::seal(
            &r,
            i,
            "2026-01-01T00:00:00.000000Z".into(),
            "a".into(),
            prev,
        )
    }

    #[test]
    fn the_floor_hashes_the_chain_bytes_and_reports_a_rate() {
        let mut records = Vec::new();
        let mut prev = GENESIS_HASH.to_string();
        for i in 1..=2000 {
            let r = record(i, prev);
            prev = r.hash.clone();
            records.push(r);
        }
        let f = measure(&records);
        assert_eq!(f.records, 2000);
        let expected =
            64.0 + 1.0 + records.iter().map(|r| r.payload().len()).sum::<usize>() as f64 / 2000.0;
        assert!((f.bytes_per_record - expected).abs() < 1e-9);
        assert!(f.single_thread_records_per_second > 0.0);
        assert!(f.threaded_records_per_second > 0.0);
        assert!(f.threads >= 1);
    }

    #[test]
    fn the_goal_is_the_lower_of_the_two() {
        let (goal, why) = verify_goal(500_000.0, 3_000_000.0);
        assert_eq!(goal, 500_000.0);
        assert!(why.starts_with("the fixed 500,000"), "{why}");
        let (goal, why) = verify_goal(500_000.0, 600_000.0);
        assert_eq!(goal, 300_000.0);
        assert!(why.starts_with("half the SHA-256 floor"), "{why}");
    }
}
