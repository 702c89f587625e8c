//! Small shared helpers: duration serialization and canary masking.

/// Serializes a `Duration` as fractional milliseconds (sub-millisecond overheads matter here).
pub mod duration_ms {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1_000_000.0).round() / 1000.0)
    }
}

/// A secret shown as evidence of a leak: its first 4 characters and an ellipsis.
pub fn mask(value: &str) -> String {
    let head: String = value.chars().take(4).collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    #[test]
    fn mask_keeps_four_chars() {
        assert_eq!(super::mask("911-56-7219"), "911-…");
        assert_eq!(super::mask("ab"), "ab…");
    }
}
