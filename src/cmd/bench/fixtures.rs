//! `preflight bench fixtures`: how long the shop fixtures take to load at `--rows` orders per
//! tenant (1,000,000 by default: 3,000,000 orders), `--runs` times on a fresh throwaway database
//! each, against issue 15's goal of under 60 s. Each file's time is logged at debug level
//! (`--log preflight_probes=debug`) for a profile.

use std::time::Duration;

use clap::Args;
use preflight_probes::db::{provision, Db};

use super::summary::{Better, Line, Summary, SummaryArgs};
use crate::cmd::db_args::{db_error, DbArgs};
use crate::error::{CliError, CmdResult, Outcome};

/// Seconds the issue allows for loading 1,000,000 orders per tenant.
const GOAL_SECONDS: f64 = 60.0;

#[derive(Args, Debug)]
#[command(mut_arg("rows", |a| a.default_value("1000000")))]
pub struct FixturesBenchArgs {
    #[command(flatten)]
    pub db: DbArgs,

    /// Loads to time, each into a fresh throwaway database.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub runs: u32,

    #[command(flatten)]
    pub summary: SummaryArgs,
}

pub async fn run(args: FixturesBenchArgs) -> CmdResult {
    if args.runs == 0 {
        return Err(CliError::config("--runs: expected at least 1"));
    }
    let (db, fixtures) = args.db.to_db()?;
    if matches!(db, Db::Url { .. }) {
        return Err(CliError::config(
            "--db: the fixtures bench loads into fresh throwaway databases only: auto, \
             container or local",
        ));
    }
    let rows = fixtures.rows;
    println!(
        "preflight bench fixtures: {} orders per tenant, {} run(s)",
        super::thousands(rows),
        args.runs
    );
    let mut loads: Vec<Duration> = Vec::new();
    for run in 1..=args.runs {
        eprintln!("run {run}: provisioning ...");
        let database = provision(&db, &fixtures).await.map_err(db_error)?;
        let t = database.timings();
        let load = t.fixtures.ok_or_else(|| {
            CliError::infra("the database reports no fixture load time (it was not loaded here)")
        })?;
        let orders: i64 = {
            let owner = database.owner_pool().await.map_err(db_error)?;
            let n = sqlx::query_scalar("SELECT count(*) FROM public.orders")
                .fetch_one(&owner)
                .await
                .map_err(|e| CliError::infra(format!("cannot count orders: {e}")))?;
            owner.close().await;
            n
        };
        println!(
            "run {run}: {} backend, server {:.1} s, fixtures {:.2} s, {} orders in all",
            database.info().kind,
            t.server.as_secs_f64(),
            load.as_secs_f64(),
            super::thousands(orders.max(0) as u64)
        );
        drop(database);
        loads.push(load);
    }
    let secs: Vec<f64> = loads.iter().map(Duration::as_secs_f64).collect();
    let median = median(&secs);
    println!(
        "fixture load: median {median:.2} s, min {:.2} s, max {:.2} s",
        secs.iter().copied().fold(f64::INFINITY, f64::min),
        secs.iter().copied().fold(0.0, f64::max)
    );
    let summary = Summary::new(
        "fixtures",
        vec![Line::new(
            format!(
                "fixture load, {} orders/tenant (median of {})",
                super::thousands(rows),
                secs.len()
            ),
            "s",
            Better::Lower,
            GOAL_SECONDS,
            median,
        )
        .basis("issue 15: 1,000,000 rows per tenant loaded in under 60 s")],
    );
    summary.emit(&args.summary)?;
    Ok(Outcome::from_all_passed(true))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
