//! Judging one run from evidence, never from what the model says about itself: tool results and
//! the final answer against the canary registry, the policy's hidden fields and row ownership,
//! table digests before and after, the approvals table and the audit trail; [`judge`] returns
//! one [`Check`] per expectation.
//!
//! - `check.rs`: the check kinds and [`Check`];
//! - `run.rs`: [`before`], [`judge`] and the checks of the run itself (outcome, step cap,
//!   recovery, refusals, tools, principal, transcript, audit trail);
//! - `leaks.rs`: cross-tenant rows and canaries, secrets and hidden fields ([`PolicyView`]);
//! - `writes.rs`: writes and approvals against the database.

mod check;
mod leaks;
mod run;
mod writes;

pub use check::{Check, CheckKind};
pub use leaks::PolicyView;
pub use run::{before, judge, Before, Context};
