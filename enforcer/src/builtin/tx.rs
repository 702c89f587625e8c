//! The transaction one tool call runs in, opened on first use.
//!
//! Opening it sets, in one round trip and for this transaction only,
//! `statement_timeout` (the model's budget) and the tenant setting row-level security reads
//! (`SELECT set_config('statement_timeout', $1, true), set_config($2, $3, true)`, bound, never
//! formatted). Calls that never touch the database (a schema description, an argument error)
//! only open it when an audit record has to be written.
//!
//! A read may instead open it on the pipelined path (`pipeline.rs`): the same settings, sent in
//! the same round trip as the read; the call then finishes it there too.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::faults::{Fault, Faults};

use super::pipeline::{PipeTx, Pipeline, Settings};

pub struct CallTx<'a> {
    pool: &'a PgPool,
    tenant_setting: &'a str,
    tenant: &'a str,
    faults: &'a Faults,
    timeout_ms: Option<u64>,
    tx: Option<Transaction<'static, Postgres>>,
    /// A statement failed in this transaction: it is aborted and must not be reused.
    poisoned: bool,
    /// Where a read may open the transaction instead (`None`: the sqlx path only).
    pipeline: Option<&'a Pipeline>,
    /// The transaction when the pipelined path opened it.
    pipe: Option<PipeTx>,
    /// The statement timeout was lifted while the pipelined transaction was open: its finish
    /// sends the lift ahead of the audit INSERT.
    lift_on_finish: bool,
}

impl<'a> CallTx<'a> {
    pub(crate) fn new(
        pool: &'a PgPool,
        tenant_setting: &'a str,
        tenant: &'a str,
        faults: &'a Faults,
        timeout_ms: Option<u64>,
    ) -> Self {
        Self {
            pool,
            tenant_setting,
            tenant,
            faults,
            timeout_ms,
            tx: None,
            poisoned: false,
            pipeline: None,
            pipe: None,
            lift_on_finish: false,
        }
    }

    /// Lets reads open this transaction on the pipelined path.
    pub(crate) fn with_pipeline(mut self, pipeline: Option<&'a Pipeline>) -> Self {
        self.pipeline = pipeline;
        self
    }

    /// The pipeline, when the transaction is not open yet and may be opened there.
    pub(crate) fn pipeline(&self) -> Option<&'a Pipeline> {
        self.pipeline
            .filter(|_| self.tx.is_none() && self.pipe.is_none() && !self.poisoned)
    }

    /// The settings the transaction opens with: the statement timeout unless `timeout_off`, the
    /// tenant setting unless `rls_disabled` (the same on both paths).
    pub(crate) fn settings(&self) -> Settings<'a> {
        Settings {
            timeout_ms: self
                .timeout_ms
                .filter(|_| !self.faults.has(Fault::TimeoutOff)),
            tenant: (!self.faults.has(Fault::RlsDisabled))
                .then_some((self.tenant_setting, self.tenant)),
        }
    }

    /// Takes over a transaction the pipelined path opened.
    pub(crate) fn adopt(&mut self, pipe: PipeTx) {
        self.pipe = Some(pipe);
    }

    /// The pipelined transaction, when that path opened this one.
    pub(crate) fn pipe(&self) -> Option<&PipeTx> {
        self.pipe.as_ref()
    }

    pub(crate) fn is_pipelined(&self) -> bool {
        self.pipe.is_some()
    }

    /// Ends a pipelined transaction in which a statement failed (rolled back off the call's
    /// latency); a record is then written in a fresh transaction.
    pub(crate) fn abandon_pipe(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            pipe.abandon();
        }
        self.poisoned = true;
    }

    /// The pipelined transaction and whether its finish must lift the statement timeout first.
    pub(crate) fn take_pipe(&mut self) -> Option<(PipeTx, bool)> {
        let lift = self.lift_on_finish;
        self.pipe.take().map(|p| (p, lift))
    }

    /// A fresh, unopened transaction with the same settings.
    pub(crate) fn fresh(&self) -> CallTx<'a> {
        CallTx::new(
            self.pool,
            self.tenant_setting,
            self.tenant,
            self.faults,
            self.timeout_ms,
        )
    }

    /// Takes the call's statement timeout off this transaction before it records a failed or
    /// denied call. That timeout is the agent's budget for its own statement (a few
    /// milliseconds under a tight policy), while the audit insert waits for the chain head,
    /// which concurrent calls hold until they commit: bound by the agent's budget, the record
    /// could time out on a busy server and the agent would get `internal` instead of the
    /// refusal. The role's own statement_timeout still applies.
    pub(crate) async fn lift_timeout(&mut self) -> Result<(), sqlx::Error> {
        let applied = self.timeout_ms.is_some() && !self.faults.has(Fault::TimeoutOff);
        self.timeout_ms = None;
        if self.pipe.is_some() {
            self.lift_on_finish = applied;
            return Ok(());
        }
        match &mut self.tx {
            Some(tx) if applied => sqlx::query("SET LOCAL statement_timeout TO DEFAULT")
                .execute(&mut **tx)
                .await
                .map(|_| ()),
            Some(_) | None => Ok(()),
        }
    }

    /// Sets the statement timeout for this call; only effective before the transaction opens.
    pub(crate) fn set_timeout(&mut self, timeout_ms: Option<u64>) {
        if !self.is_open() {
            self.timeout_ms = timeout_ms;
        }
    }

    pub fn timeout_ms(&self) -> Option<u64> {
        self.timeout_ms
    }

    pub(crate) fn is_open(&self) -> bool {
        self.tx.is_some() || self.pipe.is_some()
    }

    pub(crate) fn poisoned(&self) -> bool {
        self.poisoned
    }

    /// Marks the transaction aborted (after a failed statement).
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    /// The call's connection, opening the transaction (with its settings) on first use. A
    /// pipelined transaction still open is rolled back first: only a read opens one, and a read's
    /// transaction holds no work.
    pub async fn conn(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if let Some(pipe) = self.pipe.take() {
            pipe.abandon();
        }
        let tx = match &mut self.tx {
            Some(tx) => tx,
            slot @ None => {
                let mut tx = self.pool.begin().await?;
                let timeout = self
                    .timeout_ms
                    .filter(|_| !self.faults.has(Fault::TimeoutOff));
                let tenant = !self.faults.has(Fault::RlsDisabled);
                let setup = match (timeout, tenant) {
                    (Some(ms), true) => Some(
                        sqlx::query(
                            "SELECT set_config('statement_timeout', $1, true), set_config($2, $3, true)",
                        )
                        .bind(ms.to_string())
                        .bind(self.tenant_setting)
                        .bind(self.tenant),
                    ),
                    (Some(ms), false) => Some(
                        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
                            .bind(ms.to_string()),
                    ),
                    (None, true) => Some(
                        sqlx::query("SELECT set_config($1, $2, true)")
                            .bind(self.tenant_setting)
                            .bind(self.tenant),
                    ),
                    (None, false) => None,
                };
                if let Some(q) = setup {
                    q.execute(&mut *tx).await?;
                }
                slot.insert(tx)
            }
        };
        Ok(&mut **tx)
    }

    /// Commits, if anything was opened.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        if let Some(pipe) = self.pipe.take() {
            // Only reached without an audit record to append: the read holds nothing to commit.
            pipe.abandon();
        }
        match self.tx.take() {
            Some(tx) => tx.commit().await,
            None => Ok(()),
        }
    }

    /// Ends a transaction whose work must not persist. The ROLLBACK is queued on the connection
    /// and flushed when it returns to the pool, off the call's latency; a poisoned or healthy
    /// transaction is rolled back either way.
    pub(crate) fn discard(mut self) {
        if let Some(pipe) = self.pipe.take() {
            pipe.abandon();
        }
        drop(self.tx.take());
    }

    /// Rolls back and waits for it (used before the connection is needed again by this call).
    pub(crate) async fn rollback(mut self) {
        if let Some(pipe) = self.pipe.take() {
            pipe.abandon();
        }
        if let Some(tx) = self.tx.take() {
            if let Err(e) = tx.rollback().await {
                tracing::warn!(error = %e, "rollback of a failed gateway call failed");
            }
        }
    }
}
