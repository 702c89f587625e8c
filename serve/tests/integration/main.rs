//! Integration tests of `preflight serve`'s library on a real Postgres: the HTTP server's token
//! checks, health endpoint, rate limits, and two instances sharing the Redis budget store.

mod auth;
mod health;
mod jsonl_instances;
mod limits;
mod shared_budget;
mod support;
