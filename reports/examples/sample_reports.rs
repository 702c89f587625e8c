//! Writes the six report files for the built-in sample report into a directory, so a person can
//! open them: `cargo run -p preflight-reports --example sample_reports -- target/sample-reports`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/sample-reports".into());
    let paths =
        preflight_reports::write_all(&preflight_reports::testutil::sample_report(), dir.as_ref())?;
    for p in paths {
        println!("{}", p.display());
    }
    Ok(())
}
