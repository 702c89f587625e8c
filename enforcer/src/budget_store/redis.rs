//! The shared budget store: one Redis sorted set per budget, updated atomically by a Lua script.
//!
//! Each recorded cost is a member `<nonce>:<cost>` scored by the Redis server's own clock in
//! microseconds (`TIME` inside the script), so instances with skewed clocks still share one
//! window. The script drops members older than the window, sums the rest, and either records
//! the new cost or computes when enough will have expired — all in one atomic step, so no two
//! instances can both take the last unit. Keys expire a little after their window, so idle
//! budgets leave nothing behind.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;

use super::{BudgetError, BudgetStore, Hit};

const SCRIPT: &str = r#"
local key = KEYS[1]
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local nonce = ARGV[4]
local mode = ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
local used = 0
for i = 1, #entries, 2 do
  used = used + tonumber(string.match(entries[i], ':(%d+)$'))
end
if mode == 'usage' then
  return {1, used, 0}
end
if mode == 'charge' or used + cost <= limit then
  if cost > 0 then
    redis.call('ZADD', key, now, nonce .. ':' .. cost)
  end
  redis.call('PEXPIRE', key, math.floor(window / 1000) + 1000)
  return {1, used + cost, 0}
end
if cost > limit then
  return {0, used, window}
end
local need = used + cost - limit
local freed = 0
for i = 1, #entries, 2 do
  freed = freed + tonumber(string.match(entries[i], ':(%d+)$'))
  if freed >= need then
    return {0, used, tonumber(entries[i + 1]) + window - now}
  end
end
return {0, used, window}
"#;

/// Sliding-window counters shared through Redis.
#[derive(Clone)]
pub struct RedisStore {
    conn: MultiplexedConnection,
    script: redis::Script,
    /// The URL with any password masked, for messages.
    shown: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shown)
            .finish()
    }
}

fn mask(url: &str) -> String {
    // redis://user:password@host:port/db -> redis://user:****@host:port/db
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:****{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl RedisStore {
    pub async fn connect(url: &str) -> Result<Self, BudgetError> {
        let shown = mask(url);
        let client = redis::Client::open(url).map_err(|source| BudgetError::Connect {
            url: shown.clone(),
            source,
        })?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|source| BudgetError::Connect {
                url: shown.clone(),
                source,
            })?;
        Ok(Self {
            conn,
            script: redis::Script::new(SCRIPT),
            shown,
        })
    }

    async fn run(
        &self,
        key: &str,
        window: Duration,
        limit: u64,
        cost: u64,
        mode: &str,
    ) -> Result<(bool, u64, Duration), BudgetError> {
        let mut conn = self.conn.clone();
        let window_us = window.as_micros().min(i64::MAX as u128) as i64;
        // Lua numbers are doubles: cap "no limit" well inside their exact range.
        let limit = limit.min(1 << 52);
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let reply: Vec<i64> = self
            .script
            .key(key)
            .arg(window_us)
            .arg(limit)
            .arg(cost)
            .arg(nonce)
            .arg(mode)
            .invoke_async(&mut conn)
            .await
            .map_err(|source| BudgetError::Redis { source })?;
        match reply.as_slice() {
            [ok, used, retry_us] => Ok((
                *ok == 1,
                (*used).max(0) as u64,
                Duration::from_micros((*retry_us).max(0) as u64),
            )),
            other => Err(BudgetError::Protocol(format!("{other:?}"))),
        }
    }
}

#[async_trait]
impl BudgetStore for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn hit(
        &self,
        key: &str,
        window: Duration,
        limit: u64,
        cost: u64,
    ) -> Result<Hit, BudgetError> {
        let (ok, used, retry_after) = self.run(key, window, limit, cost, "hit").await?;
        Ok(if ok {
            Hit::Allowed { used, limit }
        } else {
            Hit::Exceeded {
                used,
                limit,
                retry_after,
            }
        })
    }

    async fn usage(&self, key: &str, window: Duration) -> Result<u64, BudgetError> {
        Ok(self.run(key, window, 0, 0, "usage").await?.1)
    }

    async fn charge(&self, key: &str, window: Duration, cost: u64) -> Result<(), BudgetError> {
        self.run(key, window, 0, cost, "charge").await.map(|_| ())
    }

    async fn health(&self) -> Result<String, BudgetError> {
        let mut conn = self.conn.clone();
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|source| BudgetError::Redis { source })?;
        Ok(format!("{} ({})", pong.to_lowercase(), self.shown))
    }
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask("redis://app:s3cret@cache:6379/0"),
            "redis://app:****@cache:6379/0"
        );
        assert_eq!(mask("redis://cache:6379"), "redis://cache:6379");
    }
}
