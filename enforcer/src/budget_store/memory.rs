//! The in-process budget store: exact sliding windows in a mutex-guarded map.
//!
//! Right for one enforcement-layer instance; several instances each count only their own
//! calls, so a shared limit needs [`super::RedisStore`] (the lint's BUD-6 says so).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{retry_after, BudgetError, BudgetStore, Hit};

#[derive(Default)]
struct Window {
    /// (when, cost), oldest first.
    entries: VecDeque<(Instant, u64)>,
    used: u64,
}

impl Window {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some((at, cost)) = self.entries.front() {
            if now.duration_since(*at) >= window {
                self.used = self.used.saturating_sub(*cost);
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }
}

/// Sliding-window counters in memory.
#[derive(Default)]
pub struct MemoryStore {
    windows: Mutex<HashMap<String, Window>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Window>) -> T) -> T {
        // The map stays consistent even if a holder panicked: every update is a single step.
        let mut guard = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

#[async_trait]
impl BudgetStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn hit(
        &self,
        key: &str,
        window: Duration,
        limit: u64,
        cost: u64,
    ) -> Result<Hit, BudgetError> {
        let now = Instant::now();
        Ok(self.with(|map| {
            let w = map.entry(key.to_string()).or_default();
            w.expire(now, window);
            if w.used.saturating_add(cost) <= limit {
                if cost > 0 {
                    w.entries.push_back((now, cost));
                    w.used = w.used.saturating_add(cost);
                }
                Hit::Allowed {
                    used: w.used,
                    limit,
                }
            } else {
                let ages = w
                    .entries
                    .iter()
                    .map(|(at, c)| (now.duration_since(*at), *c));
                Hit::Exceeded {
                    used: w.used,
                    limit,
                    retry_after: retry_after(ages, w.used, limit, cost, window),
                }
            }
        }))
    }

    async fn usage(&self, key: &str, window: Duration) -> Result<u64, BudgetError> {
        let now = Instant::now();
        Ok(self.with(|map| match map.get_mut(key) {
            Some(w) => {
                w.expire(now, window);
                w.used
            }
            None => 0,
        }))
    }

    async fn health(&self) -> Result<String, BudgetError> {
        let keys = self.with(|map| {
            map.retain(|_, w| !w.entries.is_empty());
            map.len()
        });
        Ok(format!("ok (in-process, {keys} active keys)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sliding_window_allows_up_to_the_limit_then_tells_when_to_retry() {
        let s = MemoryStore::new();
        let w = Duration::from_millis(300);
        for i in 1..=3 {
            assert_eq!(
                s.hit("k", w, 3, 1).await.unwrap(),
                Hit::Allowed { used: i, limit: 3 }
            );
        }
        let Hit::Exceeded { retry_after, .. } = s.hit("k", w, 3, 1).await.unwrap() else {
            panic!("fourth hit must exceed");
        };
        assert!(retry_after <= w && retry_after > Duration::ZERO);
        assert_eq!(s.usage("other", w).await.unwrap(), 0);
        tokio::time::sleep(retry_after + Duration::from_millis(20)).await;
        assert!(s.hit("k", w, 3, 1).await.unwrap().allowed());
        // A cost above the limit can never fit: retry after the whole window.
        assert_eq!(
            s.hit("big", w, 3, 5).await.unwrap(),
            Hit::Exceeded {
                used: 0,
                limit: 3,
                retry_after: w
            }
        );
    }
}
