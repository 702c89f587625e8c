//! `preflight approvals list | approve | reject | approvers`: the approval queue of gated writes
//! (`preflight_ops.approvals`), through the owner connection (`--url` /
//! `PREFLIGHT_AUDIT_DB_URL`).
//!
//! Deciding needs the approver's identity (`--as USER` or `PREFLIGHT_APPROVER`): a registered
//! approver (`approvals approvers add`) holding a role every gating rule names, never the
//! requester. The decision, who made it and their roles are stored with the request and end up
//! in the audit record of the write it allows.
//!
//! Exit codes: 0 done; 1 the queue refused the decision (unknown, expired or already decided
//! request, not an approver, missing role, own request); 2 bad flags (no identity, malformed
//! id, no URL); 3 the database cannot be reached.

use clap::{Args, Subcommand, ValueEnum};
use preflight_enforcer::approvals::{
    self, render, Approval, ApprovalError, ApprovalState, ListFilter, Verdict,
};

use crate::cmd::audit_args::{
    chain, connect, failure, print, print_json, status, DbUrlArgs, Format,
};
use crate::error::{CliError, CmdResult, Outcome};

#[derive(Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// List requests (pending by default), newest first.
    List(ListArgs),
    /// Approve a pending request: the agent may then run exactly that write, once, before the
    /// SLA passes again.
    Approve(DecideArgs),
    /// Reject a pending request.
    Reject(DecideArgs),
    /// The approver registry: who may decide, with which roles.
    #[command(subcommand)]
    Approvers(ApproversCommand),
}

/// Which requests `list` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Status {
    Pending,
    Approved,
    Rejected,
    Expired,
    Executed,
    All,
}

impl Status {
    fn state(self) -> Option<ApprovalState> {
        match self {
            Status::Pending => Some(ApprovalState::Pending),
            Status::Approved => Some(ApprovalState::Approved),
            Status::Rejected => Some(ApprovalState::Rejected),
            Status::Expired => Some(ApprovalState::Expired),
            Status::Executed => Some(ApprovalState::Executed),
            Status::All => None,
        }
    }
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub db: DbUrlArgs,

    /// Only requests in this state (expired: undecided, or approved and not run, past the SLA).
    #[arg(long, value_enum, default_value_t = Status::Pending)]
    pub status: Status,

    /// Only this tenant's requests.
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,

    /// At most this many requests.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub limit: i64,

    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct DecideArgs {
    /// The approval id (a UUID, as `list` and the agent's `approval_required` error show it).
    pub id: String,

    /// Who decides: a registered approver.
    #[arg(
        long = "as",
        env = "PREFLIGHT_APPROVER",
        value_name = "USER",
        hide_env_values = true
    )]
    pub approver: Option<String>,

    /// A note stored with the decision.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,

    #[command(flatten)]
    pub db: DbUrlArgs,

    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Subcommand, Debug)]
pub enum ApproversCommand {
    /// List registered approvers.
    List(ApproversListArgs),
    /// Register an approver (or replace their roles).
    Add(ApproverAddArgs),
    /// Remove an approver.
    Remove(ApproverRemoveArgs),
}

#[derive(Args, Debug)]
pub struct ApproversListArgs {
    #[command(flatten)]
    pub db: DbUrlArgs,

    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct ApproverAddArgs {
    /// The approver's name, as they will pass it to --as.
    pub name: String,

    /// A role the approver holds (matched against the policy's `approvers`); repeat or
    /// comma-separate for several.
    #[arg(
        long = "role",
        required = true,
        value_delimiter = ',',
        value_name = "ROLE"
    )]
    pub roles: Vec<String>,

    #[command(flatten)]
    pub db: DbUrlArgs,
}

#[derive(Args, Debug)]
pub struct ApproverRemoveArgs {
    pub name: String,

    #[command(flatten)]
    pub db: DbUrlArgs,
}

pub async fn run(command: ApprovalsCommand) -> CmdResult {
    match command {
        ApprovalsCommand::List(args) => list(args).await,
        ApprovalsCommand::Approve(args) => decide(args, Verdict::Approve).await,
        ApprovalsCommand::Reject(args) => decide(args, Verdict::Reject).await,
        ApprovalsCommand::Approvers(ApproversCommand::List(args)) => approvers_list(args).await,
        ApprovalsCommand::Approvers(ApproversCommand::Add(args)) => approvers_add(args).await,
        ApprovalsCommand::Approvers(ApproversCommand::Remove(args)) => approvers_remove(args).await,
    }
}

/// How a queue error ends the command: the database's failures are 2 or 3, a malformed id is
/// 2, and every refusal of the decision itself is 1 (printed, nothing changed).
fn refusal(e: ApprovalError) -> CmdResult {
    match e {
        ApprovalError::Database { .. } => Err(failure(&e)),
        ApprovalError::BadId { .. } | ApprovalError::BadApprover => {
            Err(CliError::config(chain(&e)))
        }
        ApprovalError::NotFound { .. }
        | ApprovalError::NotPending { .. }
        | ApprovalError::NotAnApprover { .. }
        | ApprovalError::MissingRole { .. }
        | ApprovalError::SelfDecision { .. }
        | ApprovalError::Refused { .. } => {
            status(format!("refused: {e}; nothing was changed"));
            Ok(Outcome::Findings)
        }
    }
}

async fn list(args: ListArgs) -> CmdResult {
    if args.limit < 1 {
        return Err(CliError::config(format!(
            "--limit: expected 1 or more, got {}",
            args.limit
        )));
    }
    let url = args.db.resolve()?;
    let mut conn = connect(&url).await?;
    let filter = ListFilter {
        state: args.status.state(),
        tenant: args.tenant.clone(),
        limit: Some(args.limit),
    };
    let items = match approvals::list(&mut conn, &filter).await {
        Ok(items) => items,
        Err(e) => return refusal(e),
    };
    match args.format {
        Format::Json => print_json(&items)?,
        Format::Table => {
            let what = match args.status.state() {
                Some(s) => format!("{s} "),
                None => String::new(),
            };
            if items.is_empty() {
                print(&format!("no {what}approval requests\n"))?;
            } else {
                print(&format!(
                    "{}\n{} {what}request{}\n",
                    render::list_table(&items),
                    items.len(),
                    if items.len() == 1 { "" } else { "s" }
                ))?;
            }
        }
    }
    Ok(Outcome::Passed)
}

/// The approver's identity: `--as` or `PREFLIGHT_APPROVER`, required (exit 2 without it).
fn identity(approver: &Option<String>, verb: &str) -> Result<String, CliError> {
    match approver.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(CliError::config(format!(
            "{verb} needs the approver's identity: pass --as USER or set PREFLIGHT_APPROVER"
        ))),
    }
}

fn decided_text(a: &Approval) -> String {
    let mut s = format!(
        "{} {}: {} on {} (tenant {}), requested by {}{}\n",
        a.state,
        a.id,
        a.tool,
        a.model,
        a.tenant_id,
        a.requested_by,
        a.reason
            .as_ref()
            .map(|r| format!(" because {r:?}"))
            .unwrap_or_default()
    );
    s.push_str(&format!(
        "decided by {} (roles {}){}\n",
        a.decided_by.clone().unwrap_or_default(),
        a.decided_roles.clone().unwrap_or_default().join(", "),
        a.decision_note
            .as_ref()
            .map(|n| format!(", note {n:?}"))
            .unwrap_or_default()
    ));
    if a.state == ApprovalState::Approved {
        s.push_str(&format!(
            "the agent may now run exactly this write once, until {} (payload sha256 {})\n",
            a.expires_at.format("%Y-%m-%d %H:%M:%SZ"),
            a.payload_sha256
        ));
    }
    s
}

async fn decide(args: DecideArgs, verdict: Verdict) -> CmdResult {
    let verb = match verdict {
        Verdict::Approve => "approve",
        Verdict::Reject => "reject",
    };
    let who = identity(&args.approver, verb)?;
    let id = approvals::parse_id(&args.id).map_err(|e| CliError::config(e.to_string()))?;
    let url = args.db.resolve()?;
    let mut conn = connect(&url).await?;
    let decided = match approvals::decide(&mut conn, id, &who, verdict, args.note.as_deref()).await
    {
        Ok(a) => a,
        Err(e) => return refusal(e),
    };
    match args.format {
        Format::Json => print_json(&decided)?,
        Format::Table => print(&decided_text(&decided))?,
    }
    Ok(Outcome::Passed)
}

async fn approvers_list(args: ApproversListArgs) -> CmdResult {
    let url = args.db.resolve()?;
    let mut conn = connect(&url).await?;
    let items = match approvals::list_approvers(&mut conn).await {
        Ok(items) => items,
        Err(e) => return refusal(e),
    };
    match args.format {
        Format::Json => print_json(&items)?,
        Format::Table if items.is_empty() => {
            print("no approvers registered (preflight approvals approvers add NAME --role ROLE)\n")?
        }
        Format::Table => print(&format!("{}\n", render::approvers_table(&items)))?,
    }
    Ok(Outcome::Passed)
}

async fn approvers_add(args: ApproverAddArgs) -> CmdResult {
    let roles: Vec<String> = args
        .roles
        .iter()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    if args.name.trim().is_empty() || roles.is_empty() {
        return Err(CliError::config(
            "an approver needs a name and at least one --role",
        ));
    }
    let url = args.db.resolve()?;
    let mut conn = connect(&url).await?;
    if let Err(e) = approvals::add_approver(&mut conn, args.name.trim(), &roles).await {
        return match e {
            ApprovalError::BadApprover => Err(CliError::config(format!(
                "{:?} is not a valid approver name (letters, digits and _ . @ + -, up to 128)",
                args.name
            ))),
            other => refusal(other),
        };
    }
    print(&format!(
        "approver {} registered with roles {}\n",
        args.name.trim(),
        roles.join(", ")
    ))?;
    Ok(Outcome::Passed)
}

async fn approvers_remove(args: ApproverRemoveArgs) -> CmdResult {
    let url = args.db.resolve()?;
    let mut conn = connect(&url).await?;
    match approvals::remove_approver(&mut conn, args.name.trim()).await {
        Ok(true) => {
            print(&format!("approver {} removed\n", args.name.trim()))?;
            Ok(Outcome::Passed)
        }
        Ok(false) => {
            status(format!(
                "refused: {} is not a registered approver; nothing was changed",
                args.name.trim()
            ));
            Ok(Outcome::Findings)
        }
        Err(e) => refusal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_required_and_trimmed() {
        assert_eq!(
            identity(&Some(" alice ".into()), "approve").unwrap(),
            "alice"
        );
        for missing in [None, Some(String::new()), Some("  ".into())] {
            let e = identity(&missing, "approve").unwrap_err();
            assert!(matches!(e, CliError::Config(_)));
            assert!(e.to_string().contains("--as USER"), "{e}");
        }
    }

    #[test]
    fn every_status_but_all_is_a_state() {
        for s in [
            Status::Pending,
            Status::Approved,
            Status::Rejected,
            Status::Expired,
            Status::Executed,
        ] {
            let state = s.state().expect("a state");
            assert_eq!(
                format!("{s:?}").to_lowercase(),
                state.as_str(),
                "the flag and the state agree"
            );
        }
        assert_eq!(Status::All.state(), None);
    }
}
