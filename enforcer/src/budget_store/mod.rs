//! Budget stores: sliding-window counters behind rate limits and quotas (WRT-7, BUD-5, BUD-6).
//!
//! The [`BudgetStore`] trait is the contract; [`MemoryStore`] serves one process, [`RedisStore`]
//! lets several enforcement-layer instances share one budget (one Redis key per budget, updated
//! by an atomic Lua script). Keys are built by the gateway, e.g. `writes:<tenant>:<user>` for
//! `max_writes_per_minute` and `quota:calls:<tenant>` for per-tenant quotas.

mod hook;
mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use self::hook::BudgetHook;
pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

/// The outcome of one [`BudgetStore::hit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    /// The cost was recorded; `used` includes it.
    Allowed { used: u64, limit: u64 },
    /// Nothing was recorded. `retry_after` is when enough of the window will have expired for
    /// the same cost to fit (the whole window if the cost alone is above the limit).
    Exceeded {
        used: u64,
        limit: u64,
        retry_after: Duration,
    },
}

impl Hit {
    pub fn allowed(&self) -> bool {
        matches!(self, Hit::Allowed { .. })
    }
}

/// A set of sliding-window counters.
///
/// Contract: a counter is the sum of the costs recorded under `key` during the last `window`
/// (a true sliding window, not fixed buckets). [`hit`](BudgetStore::hit) is atomic: of any number
/// of concurrent hits on one key — from any number of processes sharing the store — no more
/// are allowed than fit under `limit`. Errors mean the store could not be asked; callers fail
/// closed.
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// `memory` or `redis`.
    fn kind(&self) -> &'static str;

    /// Records `cost` under `key` if the window's total stays within `limit`.
    async fn hit(
        &self,
        key: &str,
        window: Duration,
        limit: u64,
        cost: u64,
    ) -> Result<Hit, BudgetError>;

    /// The window's total so far, recording nothing.
    async fn usage(&self, key: &str, window: Duration) -> Result<u64, BudgetError>;

    /// Records `cost` unconditionally: for charges known only afterwards (rows returned).
    async fn charge(&self, key: &str, window: Duration, cost: u64) -> Result<(), BudgetError> {
        self.hit(key, window, u64::MAX, cost).await.map(|_| ())
    }

    /// A one-line health statement.
    async fn health(&self) -> Result<String, BudgetError>;
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("the budget store at {url} cannot be reached")]
    Connect {
        url: String,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("the budget store failed")]
    Redis {
        #[source]
        source: ::redis::RedisError,
    },
    #[error("the budget store returned an unexpected reply: {0}")]
    Protocol(String),
    #[error("environment variable {var} (the budget store URL) is not set")]
    MissingUrl { var: String },
}

/// When enough of a sliding window expires for `cost` to fit again.
///
/// `entries` are (age, cost) from oldest to newest; `used` is their sum.
pub(crate) fn retry_after(
    entries: impl Iterator<Item = (Duration, u64)>,
    used: u64,
    limit: u64,
    cost: u64,
    window: Duration,
) -> Duration {
    if cost > limit {
        return window;
    }
    let need = used.saturating_add(cost).saturating_sub(limit);
    let mut freed = 0u64;
    for (age, c) in entries {
        freed = freed.saturating_add(c);
        if freed >= need {
            return window.saturating_sub(age);
        }
    }
    window
}

/// Builds the configured store (policy `budget_store:`).
pub async fn from_config(
    config: &crate::policy::BudgetStoreConfig,
) -> Result<std::sync::Arc<dyn BudgetStore>, BudgetError> {
    use crate::policy::BudgetStoreConfig;
    match config {
        BudgetStoreConfig::Memory => Ok(std::sync::Arc::new(MemoryStore::new())),
        BudgetStoreConfig::Redis { url_env } => {
            let url = std::env::var(url_env).map_err(|_| BudgetError::MissingUrl {
                var: url_env.clone(),
            })?;
            Ok(std::sync::Arc::new(RedisStore::connect(&url).await?))
        }
    }
}
