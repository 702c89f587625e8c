//! The approval queue (WRT-3, WRT-4, WRT-5) and dry-run receipts (WRT-6), stored in
//! `preflight_ops` (see `fixtures/shop/60_approvals.sql`).
//!
//! Two sides use it:
//! - the gateway, as the agent role inside a call's transaction (tenant setting set): it files a
//!   gated write as a pending request ([`create`]), reports its state ([`status`]) and, when the
//!   agent re-submits the approved payload, consumes it exactly once ([`consume`]);
//! - the operator, through the owner connection (`preflight approvals ...`): [`list`], [`decide`]
//!   (approve or reject, as a registered approver holding a role the rule names), and the
//!   approver registry.
//!
//! A request is bound to its exact payload: the database computes `payload_sha256` itself and
//! `consume` compares the re-submitted payload with it. Expiry is computed from `expires_at`
//! whenever a request is read, so an undecided request is denied when its SLA passes without
//! anyone acting.

mod receipts;
pub mod render;
mod store;

pub use receipts::{has_recent_dry_run, record_dry_run, DRY_RUN_TTL};
pub use store::*;
