//! The quarterly review computed from the audit log (`preflight review`), and a generator of
//! realistic audit logs through the built-in layer (`preflight bench audit-log`).
//!
//! - [`source`]: verify the chain first, then stream the window's records.
//! - [`analyze`]: the sections (QRT-1 … QRT-5, OPS-8, drift) from the records, in one pass.
//! - [`reasons`]: the deterministic write-reason rules (QRT-4).
//! - [`render`]: `review.md`, `review.html` (inline SVG charts) and `review.json`.
//! - [`generate`]: the 90-day log with known plants (or a shorter one, same plants).
//! - [`selfcheck`]: what the review found against what was planted, item by item.

pub mod analyze;
pub mod capabilities;
pub mod generate;
pub mod model;
pub mod reasons;
pub mod render;
pub mod selfcheck;
pub mod source;

pub use analyze::{Accumulator, Inputs, SuiteResult};
pub use model::Review;
