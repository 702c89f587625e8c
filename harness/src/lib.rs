//! The agent harness: a real LLM tool-calling loop over OpenAI-compatible chat completions, run
//! on scenarios against a `Gateway` and judged from evidence.
//!
//! Data flows one way: a [`scenario::Scenario`] and a model provider drive [`agent::run_agent`]
//! against a `Gateway`; [`evidence`] reads ground truth from the owner connection before and after;
//! [`judge`] turns the run and the evidence into checks; [`runner`] repeats and aggregates them
//! into report findings.

pub mod agent;
pub mod cassette;
pub mod client;
pub mod evidence;
pub mod guard;
pub mod judge;
pub mod providers;
pub mod runner;
pub mod scenario;
pub mod testutil;
pub mod transcript;
pub mod validate;

mod util;

pub use util::mask;
