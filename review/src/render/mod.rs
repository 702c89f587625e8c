//! The review's three files: `review.md`, `review.html` (self-contained, inline SVG charts, no
//! script) and `review.json`.

mod html;
mod markdown;
mod svg;

use std::path::{Path, PathBuf};

pub use html::to_html;
pub use markdown::to_markdown;

use crate::model::Review;

pub fn to_json(r: &Review) -> String {
    serde_json::to_string_pretty(r).unwrap_or_default() + "\n"
}

/// Writes the three files into `dir` (created if missing); returns their paths.
pub fn write_all(r: &Review, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (name, text) in [
        ("review.md", to_markdown(r)),
        ("review.html", to_html(r)),
        ("review.json", to_json(r)),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        out.push(p);
    }
    Ok(out)
}
