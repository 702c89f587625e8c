//! The enforcement layer a run probes ([`Target`]), decided once at the edge, and the
//! [`GatewayFactory`] contract probes use when they need an instance of their own.
//!
//! Some claims can only be tested on a fresh instance: a quota or write-rate probe needs counters
//! nobody else has touched, and a statement-timeout probe needs the same layer with a tighter
//! policy. A target that can build instances implements [`GatewayFactory`]; one that cannot
//! (a remote layer reached over HTTP) leaves those probes `not_verified`.

use std::sync::Arc;

use async_trait::async_trait;
use preflight_enforcer::policy::Policy;
use preflight_enforcer::{Faults, Gateway};

/// Why an instance of the layer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot start the {target} enforcement layer")]
    Connect {
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Builds independent instances of one enforcement layer.
///
/// Contract: every call returns a new instance with its own in-memory state (budget counters,
/// rate limits, dry-run memory), configured with `policy` and `faults`, talking to the same
/// database as the instance under test. Approvals and the audit log live in the database and
/// are therefore shared.
#[async_trait]
pub trait GatewayFactory: Send + Sync {
    /// The target's name for reports (`builtin`).
    fn name(&self) -> String;

    async fn instance(
        &self,
        policy: Arc<Policy>,
        faults: Faults,
    ) -> Result<Arc<dyn Gateway>, TargetError>;
}
