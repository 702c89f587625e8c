//! The report model and its renderers. Depends on nothing but the model: renderers take a
//! [`Report`] (or consume [`ProbeEvent`]s) and write bytes.
//!
//! - [`write_all`] writes `report.json`, `report.md`, `report.html`, `junit.xml`,
//!   `results.sarif` and `checklist.md` into a directory;
//! - [`render`] has one module per format, each with `render(report, &mut impl Write)`;
//! - [`reporter`] is the terminal: live progress from events and the end-of-run table;
//! - [`redact::scrub`] masks secrets in everything rendered; [`escape`] makes strings safe for
//!   each format.

pub mod checklist;
pub mod escape;
pub mod model;
pub mod redact;
pub mod render;
pub mod reporter;
pub mod summary;
pub mod testutil;
mod write;

pub use checklist::{Checklist, ChecklistError, Item, Section};
pub use model::*;
pub use render::json::JsonlWriter;
pub use reporter::{summary_table, LiveReporter};
pub use summary::{Counts, FamilySummary, Outcome, Summary, FAILURE_KIND_FACT};
pub use write::{write_all, write_all_with, ReportError, REPORT_FILES};
