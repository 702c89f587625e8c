//! The tail of a layer process's stderr ([`StderrTail`]), kept for the evidence of a fault and
//! redacted before anyone sees it: connection strings and passwords never leave it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// How many lines of stderr are kept.
const LINES: usize = 20;
/// Longest line kept, in characters.
const LINE_CHARS: usize = 400;

/// The last lines a process wrote to stderr.
#[derive(Clone, Default)]
pub(crate) struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    done: Arc<tokio::sync::Notify>,
    finished: Arc<std::sync::atomic::AtomicBool>,
}

impl StderrTail {
    /// Starts reading `stream` in the background until it closes.
    pub(crate) fn follow(stream: impl AsyncRead + Unpin + Send + 'static) -> StderrTail {
        let tail = StderrTail::default();
        let t = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line: String = line.chars().take(LINE_CHARS).collect();
                let mut buf = t.lines.lock().unwrap_or_else(|p| p.into_inner());
                if buf.len() == LINES {
                    buf.pop_front();
                }
                buf.push_back(line);
            }
            t.finished.store(true, std::sync::atomic::Ordering::SeqCst);
            t.done.notify_waiters();
        });
        tail
    }

    /// Waits up to `limit` for the stream to close (a crashing process's last words arrive just
    /// after the crash is noticed).
    pub(crate) async fn settle(&self, limit: std::time::Duration) {
        if self.finished.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let _ = tokio::time::timeout(limit, self.done.notified()).await;
    }

    /// The kept lines, redacted, joined by newlines.
    pub(crate) fn text(&self) -> String {
        let buf = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        buf.iter().map(|l| redact(l)).collect::<Vec<_>>().join("\n")
    }
}

/// Masks credentials: the user-info part of URLs, and `password=`/`token=`-like pairs.
pub fn redact(text: &str) -> String {
    use std::sync::OnceLock;
    static URL: OnceLock<regex::Regex> = OnceLock::new();
    static PAIR: OnceLock<regex::Regex> = OnceLock::new();
    let url = URL.get_or_init(|| {
        regex::Regex::new(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@").expect("static regex")
    });
    let pair = PAIR.get_or_init(|| {
        regex::Regex::new(
            r"(?i)\b(password|passwd|pwd|token|secret|api_key|apikey)(\s*[=:]\s*)[^\s&;,]+",
        )
        .expect("static regex")
    });
    let text = url.replace_all(text, "${1}***@");
    pair.replace_all(&text, "${1}${2}***").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked() {
        let r = redact("connect postgres://agent:s3cret@127.0.0.1:5432/shop failed; password=hunter2 token: abc");
        assert!(
            !r.contains("s3cret") && !r.contains("hunter2") && !r.contains("abc"),
            "{r}"
        );
        assert!(r.contains("postgres://***@127.0.0.1:5432/shop"), "{r}");
    }

    #[tokio::test]
    async fn keeps_the_last_lines() {
        let text: String = (0..30).map(|i| format!("line {i}\n")).collect();
        let tail = StderrTail::follow(std::io::Cursor::new(text.into_bytes()));
        tail.settle(std::time::Duration::from_secs(5)).await;
        let t = tail.text();
        assert!(t.starts_with("line 10\n") && t.ends_with("line 29"), "{t}");
    }
}
