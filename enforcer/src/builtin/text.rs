//! Small text helpers: SQL identifier quoting, and echoing agent input safely in messages.

/// `"name"` with every `"` doubled. Only ever called with names from the policy or catalog.
pub(crate) fn ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `"schema"."table"`.
pub(crate) fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

/// Agent input echoed in an error message: quoted, control characters (NUL included) escaped,
/// and cut to 64 characters so a message can never carry a pasted payload.
pub(crate) fn quote_for_message(input: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::from("\"");
    for (n, c) in input.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// 1234567 -> `1,234,567`, for budget messages.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `a, b or c`.
pub(crate) fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        assert_eq!(ident("orders"), "\"orders\"");
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(qualified("public", "a b"), "\"public\".\"a b\"");
    }

    #[test]
    fn echoes_input_safely() {
        assert_eq!(quote_for_message("x\u{0}y\"z"), "\"x\\u{0}y\\\"z\"");
        let long = "a".repeat(200);
        let q = quote_for_message(&long);
        assert!(q.chars().count() < 70, "{q}");
    }

    #[test]
    fn formats_numbers_and_lists() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(60090), "60,090");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(or_list(&["a".into(), "b".into(), "c".into()]), "a, b or c");
    }
}
