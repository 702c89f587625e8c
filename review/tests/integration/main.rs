//! Integration tests of the review: over a log generated through the real layer on a real
//! Postgres (it finds exactly what was planted; a tampered copy does not verify), and the HTML
//! in headless Chromium.

mod browser;
mod generated;
