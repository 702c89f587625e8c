//! ISO-6: admin and cross-tenant operations live in a separate policy with a separate audit
//! channel. The agent's policy must hold no such capability, and an admin policy kept beside it
//! must write its audit records somewhere the agent's calls never go.
//!
//! What counts as an admin or cross-tenant capability in an agent policy:
//! - a write tool on a tenant-exempt model: the rows are shared by every tenant, so one write
//!   changes what all of them see;
//! - a model over the audit log or the database catalog (`preflight_audit`, `pg_catalog`,
//!   `information_schema`): reading who did what, across tenants, is the security team's job;
//! - a writable field that grants privileges (`role`, `is_admin`, `*permission*`, ...) that no
//!   approval rule gates for every write tool: changing privileges without a person's decision.
//!
//! An admin policy is a policy file beside the agent's whose name contains `admin`
//! (`admin-policy.yaml`, `policy.admin.yml`). It must load, configure at least one audit sink,
//! and share none with the agent's policy: the Postgres sink is one table
//! (`preflight_audit.audit_log`), a JSONL sink one file, the tracing sink one stream.

use std::path::{Path, PathBuf};

use super::{globs, Linter};
use crate::policy::decl::{FIELD_WRITE_TOOLS, WRITE_TOOLS};
use crate::policy::{AuditSinkConfig, LintRule, Severity};

/// Writable field names that grant privileges (ISO-6).
pub const ADMIN_FIELD_PATTERNS: &[&str] = &[
    "role",
    "roles",
    "*_role",
    "*_roles",
    "is_admin",
    "is_superuser",
    "*permission*",
    "*privilege*",
];

/// Schemas no agent model may read: the audit log and the catalog.
const ADMIN_SCHEMAS: &[&str] = &["preflight_audit", "pg_catalog", "information_schema"];

/// The admin policy kept beside `policy_path`, if any: a `.yaml`/`.yml` file in the same folder,
/// other than the policy itself, whose name contains `admin`. The first in name order.
pub fn admin_policy_beside(policy_path: &Path) -> Option<PathBuf> {
    let dir = match policy_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let own = policy_path.file_name()?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                return false;
            };
            let lower = name.to_ascii_lowercase();
            p.file_name() != Some(own)
                && lower.contains("admin")
                && (lower.ends_with(".yaml") || lower.ends_with(".yml"))
                && p.is_file()
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

/// One audit channel, comparable across policies.
fn channel(sink: &AuditSinkConfig) -> String {
    match sink {
        AuditSinkConfig::Postgres => "the postgres sink (preflight_audit.audit_log)".to_string(),
        AuditSinkConfig::Jsonl { path } => {
            let p = path.trim();
            format!("the JSONL file `{}`", p.strip_prefix("./").unwrap_or(p))
        }
        AuditSinkConfig::Tracing => "the tracing sink".to_string(),
    }
}

impl Linter<'_> {
    pub(super) fn admin_separation(&mut self) {
        let p = self.p;
        let admin_fields = globs(ADMIN_FIELD_PATTERNS);
        for m in p.models.values() {
            let mp = format!("models.{}", m.name);
            let writes: Vec<&str> = m
                .tools
                .iter()
                .map(String::as_str)
                .filter(|t| WRITE_TOOLS.contains(t))
                .collect();
            if m.tenant_exempt_reason.is_some() && !writes.is_empty() {
                self.push(
                    LintRule::AdminSeparation,
                    Severity::Error,
                    &format!("{mp}.tools"),
                    Some(&m.name),
                    format!(
                        "`{}` is shared by every tenant (tenant_exempt) and the agent may write it with {}: one call changes every tenant's data; move these writes to an admin policy with its own audit channel",
                        m.name,
                        writes.join(", ")
                    ),
                );
            }
            if ADMIN_SCHEMAS.contains(&m.schema.as_str()) {
                self.push(
                    LintRule::AdminSeparation,
                    Severity::Error,
                    &mp,
                    Some(&m.name),
                    format!(
                        "`{}` reads `{}.{}`: the audit log and the catalog span every tenant and are for an admin policy, not the agent",
                        m.name, m.schema, m.table
                    ),
                );
            }
            let field_tools: Vec<&str> = m
                .tools
                .iter()
                .map(String::as_str)
                .filter(|t| FIELD_WRITE_TOOLS.contains(t))
                .collect();
            for f in m
                .writable_fields
                .iter()
                .filter(|f| admin_fields.is_match(f))
            {
                let ungated: Vec<&str> = field_tools
                    .iter()
                    .copied()
                    .filter(|t| {
                        !p.approvals.iter().any(|r| {
                            r.model == m.name
                                && (r.fields.contains(f)
                                    || r.threshold.as_ref().is_some_and(|th| th.field == *f))
                                && (r.tools.is_empty() || r.tools.contains(*t))
                        })
                    })
                    .collect();
                if !ungated.is_empty() {
                    self.push(
                        LintRule::AdminSeparation,
                        Severity::Error,
                        &format!("{mp}.writable_fields.{f}"),
                        Some(&m.name),
                        format!(
                            "`{}.{f}` grants privileges and the agent can change it with {} without an approval: an admin operation in the agent's policy; gate it or move it to an admin policy",
                            m.name,
                            ungated.join(", ")
                        ),
                    );
                }
            }
        }
        self.admin_channel();
    }

    /// The admin policy beside this one, if any, writes to audit channels of its own.
    fn admin_channel(&mut self) {
        let p = self.p;
        let Some(admin_path) = admin_policy_beside(Path::new(&p.path)) else {
            return;
        };
        let shown = admin_path.display().to_string();
        let admin = match crate::policy::load(&admin_path, self.catalog) {
            Ok(a) => a,
            Err(e) => {
                self.push(
                    LintRule::AdminSeparation,
                    Severity::Error,
                    "audit",
                    None,
                    format!(
                        "the admin policy beside this one, {shown}, does not load, so its audit channel cannot be checked: {}",
                        e.to_string().lines().next().unwrap_or_default()
                    ),
                );
                return;
            }
        };
        if admin.audit.sinks.is_empty() {
            self.push(
                LintRule::AdminSeparation,
                Severity::Error,
                "audit",
                None,
                format!("the admin policy {shown} configures no audit sink: admin operations would leave no record"),
            );
            return;
        }
        let ours: Vec<String> = p.audit.sinks.iter().map(channel).collect();
        let shared: Vec<String> = admin
            .audit
            .sinks
            .iter()
            .map(channel)
            .filter(|c| ours.contains(c))
            .collect();
        if !shared.is_empty() {
            self.push(
                LintRule::AdminSeparation,
                Severity::Error,
                "audit.sinks",
                None,
                format!(
                    "the admin policy {shown} writes to the agent's audit channel ({}); give admin operations their own (a JSONL file or stream of their own)",
                    shared.join(", ")
                ),
            );
        }
    }
}
