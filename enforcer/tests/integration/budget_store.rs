//! Budget stores against a real Redis: atomic sliding windows shared by several instances.

use std::sync::Arc;
use std::time::Duration;

use preflight_enforcer::budget_store::{BudgetStore, Hit, MemoryStore, RedisStore};

use crate::writes_support::RedisServer;

async fn concurrent_hits(stores: &[Arc<dyn BudgetStore>], per_store: usize, limit: u64) -> usize {
    let mut tasks = Vec::new();
    for s in stores {
        for _ in 0..per_store {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.hit("writes:acme:u1", Duration::from_secs(60), limit, 1)
                    .await
                    .expect("store answers")
                    .allowed()
            }));
        }
    }
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap() {
            allowed += 1;
        }
    }
    allowed
}

#[tokio::test]
async fn two_redis_stores_share_one_limit_atomically() {
    let redis = RedisServer::start().await;
    let a: Arc<dyn BudgetStore> = Arc::new(RedisStore::connect(&redis.url).await.unwrap());
    let b: Arc<dyn BudgetStore> = Arc::new(RedisStore::connect(&redis.url).await.unwrap());
    assert!(a.health().await.unwrap().starts_with("pong"));
    // 2 x 25 concurrent hits against a limit of 20: exactly 20 pass, whichever instance asked.
    let allowed = concurrent_hits(&[a.clone(), b.clone()], 25, 20).await;
    assert_eq!(allowed, 20);
    assert_eq!(
        a.usage("writes:acme:u1", Duration::from_secs(60))
            .await
            .unwrap(),
        20
    );
    let Hit::Exceeded {
        retry_after, used, ..
    } = b
        .hit("writes:acme:u1", Duration::from_secs(60), 20, 1)
        .await
        .unwrap()
    else {
        panic!("the shared limit holds on the other instance");
    };
    assert_eq!(used, 20);
    assert!(retry_after > Duration::from_secs(55) && retry_after <= Duration::from_secs(60));
    // Other keys are independent.
    assert!(a
        .hit("writes:globex:u1", Duration::from_secs(60), 20, 1)
        .await
        .unwrap()
        .allowed());
}

#[tokio::test]
async fn redis_window_slides_and_costs_add_up() {
    let redis = RedisServer::start().await;
    let s = RedisStore::connect(&redis.url).await.unwrap();
    let w = Duration::from_millis(400);
    assert!(s.hit("rows:acme", w, 100, 60).await.unwrap().allowed());
    s.charge("rows:acme", w, 30).await.unwrap();
    assert_eq!(s.usage("rows:acme", w).await.unwrap(), 90);
    let Hit::Exceeded { retry_after, .. } = s.hit("rows:acme", w, 100, 20).await.unwrap() else {
        panic!("90 + 20 > 100");
    };
    assert!(retry_after <= w);
    tokio::time::sleep(w + Duration::from_millis(50)).await;
    assert_eq!(s.usage("rows:acme", w).await.unwrap(), 0);
    assert!(s.hit("rows:acme", w, 100, 20).await.unwrap().allowed());
}

#[tokio::test]
async fn separate_memory_stores_do_not_share_which_is_why_redis_exists() {
    let a: Arc<dyn BudgetStore> = Arc::new(MemoryStore::new());
    let b: Arc<dyn BudgetStore> = Arc::new(MemoryStore::new());
    assert_eq!(concurrent_hits(std::slice::from_ref(&a), 30, 20).await, 20);
    // A second in-process store counts from zero: two instances would allow 2x the limit.
    assert_eq!(concurrent_hits(&[b], 30, 20).await, 20);
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_pass() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let err = RedisStore::connect(&format!("redis://user:pw@127.0.0.1:{port}/"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("cannot be reached") && !msg.contains("pw@"),
        "{msg}"
    );
}
