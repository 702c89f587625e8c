//! The HTML report's "Attempts" section (agent reports): every attempt's transcript — turns, tool
//! calls, results — and the checks that decided it with their evidence, canaries highlighted.
//! Canary values arrive masked by the harness (`[canary: ACME…]`); this only marks them up.

use std::fmt::Write as _;

use crate::escape::markup;
use crate::model::AttemptRecord;

/// A tool result or prompt longer than this is cut, with a note; the full text is in the
/// transcript file.
const MAX_TEXT: usize = 4000;

pub(super) fn section(h: &mut String, attempts: &[AttemptRecord]) {
    if attempts.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<section id=\"attempts\" aria-labelledby=\"attempts-h\">\n<h2 id=\"attempts-h\">Attempts ({})</h2>\n\
         <p>Each attempt's transcript and the evidence that decided each check. Canary values are \
         masked to their first four characters and <mark class=\"canary\">highlighted</mark>.</p>\n<ol class=\"findings\">\n",
        attempts.len()
    );
    for a in attempts {
        let verdict = a.verdict.as_str();
        let _ = write!(
            h,
            "<li class=\"finding v-{verdict}\" id=\"attempt-{}-{}\">\n<details>\n<summary><span class=\"badges\"><span class=\"badge v-{verdict}\">{verdict}</span></span>\
             <span class=\"title\">{} · attempt {}</span><span class=\"meta\">{} · started {} · trace <code>{}</code></span></summary>\n<div class=\"body\">\n",
            markup(&a.scenario),
            a.attempt,
            markup(&a.scenario),
            a.attempt,
            markup(&a.outcome),
            markup(&a.started_at),
            markup(&a.trace_id),
        );
        h.push_str("<h3>Checks</h3>\n<ul class=\"plain\">");
        for c in &a.checks {
            let _ = write!(
                h,
                "<li><span class=\"badge v-{}\">{}</span> <code>{}</code>{} — {}",
                c.verdict.as_str(),
                c.verdict.as_str(),
                markup(&c.code),
                c.failure_kind
                    .as_deref()
                    .map(|k| format!(" <strong>({} failure)</strong>", markup(k)))
                    .unwrap_or_default(),
                highlight(&c.summary),
            );
            if !c.evidence.is_empty() {
                h.push_str("<ul class=\"plain\">");
                for e in &c.evidence {
                    let _ = write!(h, "<li><code>{}</code></li>", highlight(e));
                }
                h.push_str("</ul>");
            }
            h.push_str("</li>");
        }
        h.push_str("</ul>\n<h3>Transcript</h3>\n<ol class=\"plain transcript\">");
        for t in &a.turns {
            let step = t.step.map(|s| format!(" · step {s}")).unwrap_or_default();
            let label = if t.label.is_empty() {
                String::new()
            } else {
                format!(" <code>{}</code>", markup(&t.label))
            };
            let _ = write!(
                h,
                "<li><strong>{}</strong>{step}{label}<pre>{}</pre></li>",
                markup(&t.role),
                highlight(&cut(&t.text)),
            );
        }
        h.push_str("</ol>\n</div>\n</details>\n</li>\n");
    }
    h.push_str("</ol>\n</section>\n");
}

fn cut(s: &str) -> String {
    if s.chars().count() <= MAX_TEXT {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX_TEXT).collect();
        format!("{head}\n… (cut; the full text is in the transcript file)")
    }
}

/// Escapes `s` and wraps every `[canary…]` marker in `<mark class="canary">`.
fn highlight(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("[canary") {
        out.push_str(&markup(&rest[..at]));
        let tail = &rest[at..];
        let end = tail.find(']').map(|e| e + 1).unwrap_or(tail.len());
        let _ = write!(
            out,
            "<mark class=\"canary\">{}</mark>",
            markup(&tail[..end])
        );
        rest = &tail[end..];
    }
    out.push_str(&markup(rest));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canaries_are_marked_and_text_escaped() {
        let h = highlight("a <b> [canary: ACME…] c");
        assert_eq!(
            h,
            "a &lt;b&gt; <mark class=\"canary\">[canary: ACME…]</mark> c"
        );
    }
}
