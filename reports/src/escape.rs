//! Escaping for each output format. Findings carry attacker-controlled strings (row values,
//! error messages from the layer under test), so every renderer passes every string through the
//! function for its context here — never `format!` raw data into markup.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that must not reach a reader raw: C0/C1 controls (except tab and newline), DEL,
/// bidirectional overrides that can make text read differently than it is ("trojan source"),
/// and Unicode non-characters that XML forbids. They become visible escapes (`\x1b`, `\u{202e}`).
fn is_hidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{d}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{fffe}' | '\u{ffff}'
        | '\u{fdd0}'..='\u{fdef}')
}

/// Makes hidden characters visible; `\r\n` becomes `\n`.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_hidden) {
        return Cow::Borrowed(text);
    }
    let text = text.replace("\r\n", "\n");
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !is_hidden(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// Text or attribute content for HTML and XML: `& < > " '` become entities, hidden characters
/// become visible escapes. Safe in element text and in quoted attributes alike.
pub fn markup(text: &str) -> String {
    let text = visible(text);
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Inline Markdown (GitHub-flavoured), including table cells: punctuation that could start
/// formatting, links or code is backslash-escaped, `<`/`>`/`&` become entities so raw HTML
/// cannot render, and newlines become spaces so a cell stays one row.
pub fn md_inline(text: &str) -> String {
    let text = visible(text);
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            // Punctuation GFM reads as emphasis, code, links, tables, headings, images or
            // strikethrough. A backslash before ASCII punctuation is always a literal in
            // CommonMark. `-`, `.`, `:` and the like only matter at a line start, and escaping
            // them would make IDs like `ISO-3` unreadable in the raw comment.
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            // `@name` would notify a GitHub user from an attacker-chosen string; a zero-width
            // joiner keeps it readable but inert.
            '@' => out.push_str("@\u{2060}"),
            '\n' | '\t' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// A code span for inline Markdown (also in table cells): the fence is longer than any run of
/// backticks inside, and `|` is escaped because GFM splits cells before it parses code spans.
pub fn md_code(text: &str) -> String {
    let text = visible(text).replace(['\n', '\t'], " ");
    let longest = longest_backtick_run(&text);
    let fence = "`".repeat(longest + 1);
    let body = text.replace('|', "\\|");
    // A span that starts or ends with a backtick needs padding spaces to be parsed.
    if body.starts_with('`') || body.ends_with('`') || body.is_empty() {
        format!("{fence} {body} {fence}")
    } else {
        format!("{fence}{body}{fence}")
    }
}

/// A fenced code block whose fence cannot be closed by the content.
pub fn md_block(text: &str, lang: &str) -> String {
    let text = visible(text);
    let fence = "`".repeat(longest_backtick_run(&text).max(2) + 1);
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&fence);
    out.push_str(lang);
    out.push('\n');
    out.push_str(text.trim_end_matches('\n'));
    out.push('\n');
    out.push_str(&fence);
    out.push('\n');
    out
}

fn longest_backtick_run(text: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

/// Cuts `text` to at most `max` characters, marking the cut.
pub fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((i, _)) => {
            let omitted = text[i..].chars().count();
            Cow::Owned(format!("{}… ({omitted} more characters)", &text[..i]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NASTY: &str = "<script>alert(1)</script> ]]> \"q\" 'a' | `tick` a&b \u{7}\u{1b}[31m \u{202e}evil\r\n@admin";

    #[test]
    fn markup_escapes_everything_dangerous() {
        let out = markup(NASTY);
        for bad in ["<", ">", "\"", "'", "\u{7}", "\u{1b}", "\u{202e}", "\r"] {
            assert!(!out.contains(bad), "{bad:?} survived in {out}");
        }
        assert!(out.contains("&lt;script&gt;"));
        assert!(out.contains("]]&gt;"));
        assert!(out.contains("a&amp;b"));
        assert!(out.contains("\\x07\\x1b[31m"));
        assert!(out.contains("\\u{202e}evil"));
    }

    #[test]
    fn md_inline_cannot_break_a_table_or_render_html() {
        let out = md_inline(NASTY);
        assert!(!out.contains('\n'));
        assert!(!out.contains('<'));
        // Every `|` and backtick is preceded by a backslash.
        for (i, c) in out.char_indices() {
            if c == '|' || c == '`' {
                assert_eq!(&out[i - 1..i], "\\", "unescaped {c} in {out}");
            }
        }
        assert!(out.contains("@\u{2060}admin"));
        assert_eq!(md_inline("ISO-3, PRE-1"), "ISO-3, PRE-1");
    }

    #[test]
    fn md_code_survives_backticks_and_pipes() {
        assert_eq!(md_code("a|b"), "`a\\|b`");
        assert_eq!(md_code("a`b"), "``a`b``");
        assert_eq!(md_code("`x`"), "`` `x` ``");
        let block = md_block("```\nrm -rf\n````", "json");
        assert!(block.starts_with("`````json\n"), "{block}");
        assert!(block.ends_with("\n`````\n"));
    }

    #[test]
    fn truncate_marks_the_cut() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc… (3 more characters)");
        assert_eq!(truncate("ééééé", 2), "éé… (3 more characters)");
    }
}
