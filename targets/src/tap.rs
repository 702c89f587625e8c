//! A stdio child process as an rmcp transport whose stdout is watched line by line
//! ([`TappedChild`]), so that output that is not JSON-RPC can be named in the evidence.
//!
//! rmcp's line reader drops a line that is not JSON (it logs it at debug level and waits for the
//! next one, as the other MCP SDKs do), so a layer that answers a call with garbage looks, through
//! rmcp alone, exactly like one that never answers. The tap sees every line before rmcp does and
//! keeps the last few that do not parse as JSON; the link reports them instead of a bare timeout.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rmcp::service::{RoleClient, RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::Transport;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::stderr::redact;

/// How many non-JSON lines are kept.
const KEPT: usize = 3;
/// Longest excerpt of a non-JSON line kept, in characters.
const EXCERPT_CHARS: usize = 200;
/// The longest line checked; rmcp itself discards longer ones.
const MAX_LINE: usize = rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH;

/// The lines of a child's stdout that were not JSON, redacted and truncated.
#[derive(Clone, Default)]
pub(crate) struct NotJson(Arc<Mutex<VecDeque<String>>>);

impl NotJson {
    fn push(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let mut excerpt: String = text.trim().chars().take(EXCERPT_CHARS).collect();
        if text.trim().chars().count() > EXCERPT_CHARS {
            excerpt.push('…');
        }
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(redact(&excerpt));
    }

    /// The kept lines, oldest first.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// Reads through to `inner`, checking each complete line as JSON on the way.
struct Tap<R> {
    inner: R,
    line: Vec<u8>,
    /// The current line outgrew [`MAX_LINE`]: skip to its end without checking it.
    overlong: bool,
    not_json: NotJson,
}

impl<R> Tap<R> {
    fn saw(&mut self, bytes: &[u8]) {
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let ends = chunk.last() == Some(&b'\n');
            let body = if ends {
                &chunk[..chunk.len() - 1]
            } else {
                chunk
            };
            if !self.overlong {
                if self.line.len() + body.len() > MAX_LINE {
                    self.overlong = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(body);
                }
            }
            if ends {
                let line = std::mem::take(&mut self.line);
                let trimmed = line.strip_suffix(b"\r").unwrap_or(&line);
                let blank = trimmed.iter().all(u8::is_ascii_whitespace);
                if !self.overlong
                    && !blank
                    && serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).is_err()
                {
                    self.not_json.push(trimmed);
                }
                self.overlong = false;
            }
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Tap<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let new = buf.filled()[before..].to_vec();
            self.saw(&new);
        }
        polled
    }
}

/// A child process speaking MCP on stdio, with its stdout tapped.
pub(crate) struct TappedChild {
    child: Option<Child>,
    transport: AsyncRwTransport<RoleClient, Tap<ChildStdout>, ChildStdin>,
    close_timeout: Duration,
}

impl TappedChild {
    /// Wraps a child spawned with piped stdin and stdout; `None` when either is missing.
    pub(crate) fn new(mut child: Child, close_timeout: Duration) -> Option<(Self, NotJson)> {
        let stdout = child.stdout.take()?;
        let stdin = child.stdin.take()?;
        let not_json = NotJson::default();
        let tap = Tap {
            inner: stdout,
            line: Vec::new(),
            overlong: false,
            not_json: not_json.clone(),
        };
        Some((
            TappedChild {
                child: Some(child),
                transport: AsyncRwTransport::new(tap, stdin),
                close_timeout,
            },
            not_json,
        ))
    }
}

impl Transport<RoleClient> for TappedChild {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.transport.send(item)
    }

    fn receive(
        &mut self,
    ) -> impl std::future::Future<Output = Option<RxJsonRpcMessage<RoleClient>>> + Send {
        self.transport.receive()
    }

    /// The MCP stdio shutdown: close the child's stdin and wait; then SIGTERM and wait; then
    /// kill. The child is reaped in every case.
    async fn close(&mut self) -> Result<(), Self::Error> {
        let closed = self.transport.close().await;
        if let Some(mut child) = self.child.take() {
            if tokio::time::timeout(self.close_timeout, child.wait())
                .await
                .is_err()
            {
                if let Some(pid) = child.id() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                if tokio::time::timeout(self.close_timeout, child.wait())
                    .await
                    .is_err()
                {
                    child.kill().await?;
                }
            }
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap() -> Tap<&'static [u8]> {
        Tap {
            inner: &[],
            line: Vec::new(),
            overlong: false,
            not_json: NotJson::default(),
        }
    }

    #[test]
    fn lines_that_are_not_json_are_kept_redacted() {
        let mut t = tap();
        t.saw(b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"result\": {}}\n{\"jsonrpc\": \"2.0\", \"id\": 2, \"res");
        t.saw(b"ult\": {\"content\": 7\n\nconnecting to postgres://layer:hunter2@db:5432/x\r\n");
        assert_eq!(
            t.not_json.lines(),
            vec![
                "{\"jsonrpc\": \"2.0\", \"id\": 2, \"result\": {\"content\": 7".to_string(),
                "connecting to postgres://***@db:5432/x".to_string(),
            ]
        );
    }

    #[test]
    fn long_lines_are_truncated_and_only_the_last_few_kept() {
        let mut t = tap();
        for i in 0..5 {
            t.saw(format!("garbage {i} {}\n", "x".repeat(500)).as_bytes());
        }
        let lines = t.not_json.lines();
        assert_eq!(lines.len(), KEPT);
        assert!(lines[0].starts_with("garbage 2 "));
        assert!(lines[0].ends_with('…'));
        assert!(lines[0].chars().count() <= EXCERPT_CHARS + 1);
    }
}
