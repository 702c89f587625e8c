//! The audit log as `COPY ... TO STDOUT (FORMAT binary)` sends it, turned into [`ChainRow`]s.
//!
//! Binary rather than text: the server then sends each column's stored value (an int8, a
//! timestamp's microseconds, a text's bytes, an array's elements, a jsonb's text) instead of
//! rendering dates, jsonb arrays and escaped text for every row, which made the server's one
//! backend the verifier's bottleneck. The payload is rendered here exactly as the chain trigger
//! renders it (`canonical`): the time as its `to_char` writes it, `roles` and `subjects` as
//! `jsonb_build_array` renders a `text[]`, the duration as `float8out`.
//!
//! The stream is split between threads in whole rows: [`RowSplitter`] finds row boundaries on
//! the reading thread (lengths only, no parsing); [`parse_rows`] parses a run of rows on a
//! worker.

use super::engine::ChainRow;
use crate::audit::canonical::{format_time, pg_float8_text, write_jsonb_string, PayloadWriter};

/// The binary COPY signature, then the flags and header-extension length (both 0 here).
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
const HEADER_LEN: usize = SIGNATURE.len() + 8;

/// Columns per row: the 20 payload columns, one for the time text of a timestamp `format_time`
/// cannot render like `to_char`, then `prev_hash` and `hash`.
pub(super) const COLUMNS: usize = 23;

/// How a payload column is sent and enters the payload, in [`COLUMNS`] order (prev_hash and
/// hash follow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    /// int8 → a JSON number.
    Int8,
    /// timestamptz → the time text (or the next column's text when that is not NULL).
    At,
    /// The `to_char` text for a time outside the years 1 to 9999, NULL otherwise; not a
    /// payload field of its own.
    AtText,
    /// text → a JSON string.
    Text,
    /// text[] → a JSON array of strings.
    TextArray,
    /// jsonb → its text.
    Jsonb,
    /// float8 → a JSON string of its `float8out` text.
    Float8,
}

const PAYLOAD_COLUMNS: [Column; 21] = {
    use Column::*;
    [
        Int8, At, AtText, Text, Text, Text, TextArray, Text, Jsonb, Text, Text, Text, Int8, Int8,
        Float8, Text, Text, Text, Text, TextArray, Text,
    ]
};

/// Finds whole rows in the byte stream as it arrives.
#[derive(Debug, Default)]
pub(super) struct RowSplitter {
    /// Whether the header has been read.
    started: bool,
    /// Whether the trailer (field count -1) has been read.
    pub(super) ended: bool,
    /// Bytes of `buf` known to hold whole rows.
    whole: usize,
    /// Rows among them.
    rows: usize,
}

impl RowSplitter {
    /// Scans `buf` (everything not yet taken) past the rows that are now complete. Returns an
    /// error for a stream that is not binary COPY of [`COLUMNS`] columns.
    pub(super) fn scan(&mut self, buf: &mut Vec<u8>) -> Result<(), String> {
        if !self.started {
            if buf.len() < HEADER_LEN {
                return Ok(());
            }
            if !buf.starts_with(SIGNATURE) {
                return Err("the COPY stream does not start with the binary signature".into());
            }
            let ext = u32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]) as usize;
            if buf.len() < HEADER_LEN + ext {
                return Ok(());
            }
            buf.drain(..HEADER_LEN + ext);
            self.started = true;
        }
        while !self.ended {
            match row_len(&buf[self.whole..])? {
                RowLen::Trailer => self.ended = true,
                RowLen::Incomplete => break,
                RowLen::Row(n) => {
                    self.whole += n;
                    self.rows += 1;
                }
            }
        }
        Ok(())
    }

    /// Bytes of whole rows at the front of the buffer.
    pub(super) fn whole_bytes(&self) -> usize {
        self.whole
    }

    /// Takes the whole rows off the front of `buf`, as a batch for [`parse_rows`].
    pub(super) fn take(&mut self, buf: &mut Vec<u8>) -> Vec<u8> {
        let rest = buf.split_off(self.whole);
        self.whole = 0;
        self.rows = 0;
        std::mem::replace(buf, rest)
    }
}

enum RowLen {
    Row(usize),
    Trailer,
    Incomplete,
}

/// The length of the row at the front of `b`.
fn row_len(b: &[u8]) -> Result<RowLen, String> {
    if b.len() < 2 {
        return Ok(RowLen::Incomplete);
    }
    let fields = i16::from_be_bytes([b[0], b[1]]);
    if fields == -1 {
        return Ok(RowLen::Trailer);
    }
    if fields as usize != COLUMNS {
        return Err(format!("{fields} columns, expected {COLUMNS}"));
    }
    let mut at = 2;
    for _ in 0..COLUMNS {
        if b.len() < at + 4 {
            return Ok(RowLen::Incomplete);
        }
        let len = i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        at += 4;
        if len > 0 {
            at += len as usize;
        } else if len < -1 {
            return Err(format!("a column of length {len}"));
        }
    }
    Ok(if b.len() < at {
        RowLen::Incomplete
    } else {
        RowLen::Row(at)
    })
}

/// Parses and hashes a run of whole rows (on a worker thread).
pub(super) fn parse_rows(batch: Vec<u8>) -> Vec<Result<ChainRow, String>> {
    let mut out = Vec::with_capacity(batch.len() / 400 + 1);
    let mut rest = &batch[..];
    while !rest.is_empty() {
        let (row, len) = parse_row(rest);
        out.push(row);
        match len {
            Some(n) => rest = &rest[n..],
            // Not reached for a batch of whole rows (`RowSplitter`); stop rather than loop.
            None => break,
        }
    }
    out
}

/// Parses the row at the front of `b`; returns it and its length in bytes (`None` when the
/// row's own length could not be read).
fn parse_row(b: &[u8]) -> (Result<ChainRow, String>, Option<usize>) {
    let mut fields: [Option<&[u8]>; COLUMNS] = [None; COLUMNS];
    let mut at = 2;
    for f in fields.iter_mut() {
        let Some(len) = b.get(at..at + 4) else {
            return (Err("a row ends mid-column".into()), None);
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        at += 4;
        if len >= 0 {
            let Some(v) = b.get(at..at + len as usize) else {
                return (Err("a row ends mid-column".into()), None);
            };
            *f = Some(v);
            at += len as usize;
        }
    }
    (row(&fields), Some(at))
}

fn row(fields: &[Option<&[u8]>; COLUMNS]) -> Result<ChainRow, String> {
    let id = match fields[0] {
        Some(v) => int8(v)?,
        None => return Err("the id is NULL".into()),
    };
    let mut payload = String::with_capacity(512);
    let mut p = PayloadWriter::new(&mut payload);
    for (i, (f, kind)) in fields.iter().zip(PAYLOAD_COLUMNS).enumerate() {
        if kind == Column::AtText {
            continue;
        }
        let Some(v) = f else {
            p.raw(None);
            continue;
        };
        match kind {
            Column::Int8 => p.number(Some(int8(v)?)),
            Column::At => match (fields[i + 1], time_text(v)?) {
                (Some(text), _) => p.text(Some(utf8(text)?)),
                (None, Some(text)) => p.text(Some(&text)),
                // `to_char` of an infinite time is NULL.
                (None, None) => p.raw(None),
            },
            Column::AtText => {}
            Column::Text => p.text(Some(utf8(v)?)),
            Column::TextArray => text_array(v, p.field())?,
            Column::Jsonb => match v.split_first() {
                Some((1, text)) => p.raw(Some(utf8(text)?)),
                _ => return Err("a jsonb column in an unknown binary version".into()),
            },
            Column::Float8 => {
                let bits: [u8; 8] = (*v).try_into().map_err(|_| "a float8 of wrong length")?;
                p.text(Some(&pg_float8_text(f64::from_be_bytes(bits))));
            }
        }
    }
    p.finish();
    let hash = |f: Option<&[u8]>, what: &str| -> Result<String, String> {
        let v = f.ok_or_else(|| format!("{what} is NULL"))?;
        utf8(v).map(str::to_owned)
    };
    Ok(ChainRow::new(
        id,
        payload,
        hash(fields[21], "prev_hash")?,
        hash(fields[22], "hash")?,
    ))
}

fn int8(v: &[u8]) -> Result<i64, String> {
    let bits: [u8; 8] = v.try_into().map_err(|_| "an int8 of wrong length")?;
    Ok(i64::from_be_bytes(bits))
}

fn utf8(v: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(v).map_err(|_| "a column is not UTF-8".to_string())
}

/// Microseconds since 2000-01-01 UTC as `to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"
/// HH24:MI:SS.US"Z"')` writes them. Only called for years 1 to 9999 (the query sends the
/// server's own text for the others); `None` for `infinity` and `-infinity`, which `to_char`
/// renders as NULL.
fn time_text(v: &[u8]) -> Result<Option<String>, String> {
    /// 2000-01-01 in Unix microseconds.
    const PG_EPOCH_US: i64 = 946_684_800_000_000;
    let pg = int8(v)?;
    if pg == i64::MAX || pg == i64::MIN {
        return Ok(None);
    }
    let us = pg
        .checked_add(PG_EPOCH_US)
        .ok_or("a timestamp out of range")?;
    let at = chrono::DateTime::from_timestamp_micros(us).ok_or("a timestamp out of range")?;
    Ok(Some(format_time(at)))
}

/// A binary `text[]` as `jsonb_build_array` renders it: nested JSON arrays by dimension, NULL
/// elements as `null`, lower bounds ignored, no dimensions as `[]`.
fn text_array(v: &[u8], out: &mut String) -> Result<(), String> {
    let word = |at: usize| -> Result<i32, String> {
        v.get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| "a text[] column is cut short".to_string())
    };
    let ndim = word(0)?;
    if !(0..=6).contains(&ndim) {
        return Err(format!("a text[] column with {ndim} dimensions"));
    }
    if ndim == 0 {
        out.push_str("[]");
        return Ok(());
    }
    let ndim = ndim as usize;
    let mut dims = Vec::with_capacity(ndim);
    for d in 0..ndim {
        let n = word(12 + 8 * d)?;
        if n < 0 {
            return Err("a text[] column with a negative dimension".into());
        }
        dims.push(n as usize);
    }
    let mut at = 12 + 8 * ndim;
    let mut elements = Vec::new();
    for _ in 0..dims.iter().product::<usize>() {
        let len = word(at)?;
        at += 4;
        if len < 0 {
            elements.push(None);
            continue;
        }
        let e = v
            .get(at..at + len as usize)
            .ok_or("a text[] element is cut short")?;
        elements.push(Some(utf8(e)?));
        at += len as usize;
    }
    let mut next = elements.into_iter();
    nest(&dims, &mut next, out);
    Ok(())
}

fn nest<'a>(
    dims: &[usize],
    elements: &mut impl Iterator<Item = Option<&'a str>>,
    out: &mut String,
) {
    out.push('[');
    for i in 0..dims[0] {
        if i > 0 {
            out.push_str(", ");
        }
        if dims.len() > 1 {
            nest(&dims[1..], elements, out);
        } else {
            match elements.next().flatten() {
                Some(s) => write_jsonb_string(s, out),
                None => out.push_str("null"),
            }
        }
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, v: Option<&[u8]>) {
        match v {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }

    fn array(dims: &[i32], elements: &[Option<&str>]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(dims.len() as i32).to_be_bytes());
        v.extend_from_slice(&0i32.to_be_bytes());
        v.extend_from_slice(&25u32.to_be_bytes());
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
            v.extend_from_slice(&1i32.to_be_bytes());
        }
        for e in elements {
            field(&mut v, e.map(str::as_bytes));
        }
        v
    }

    #[test]
    fn text_arrays_render_like_jsonb() {
        let render = |v: &[u8]| {
            let mut s = String::new();
            text_array(v, &mut s).map(|()| s)
        };
        assert_eq!(render(&array(&[], &[])).unwrap(), "[]");
        assert_eq!(
            render(&array(&[2], &[Some("a\"b"), None])).unwrap(),
            r#"["a\"b", null]"#
        );
        assert_eq!(
            render(&array(
                &[2, 2],
                &[Some("a"), Some("b"), Some("c"), Some("d")]
            ))
            .unwrap(),
            r#"[["a", "b"], ["c", "d"]]"#
        );
        let cut = array(&[2], &[Some("a"), Some("b")]);
        assert!(render(&cut[..cut.len() - 1]).is_err());
        assert!(render(&[0, 0, 0]).is_err());
    }

    #[test]
    fn times_render_like_to_char() {
        // 2000-01-01 00:00:00.000001 and a date before the epoch.
        let text = |us: i64| time_text(&us.to_be_bytes()).unwrap();
        assert_eq!(text(1).unwrap(), "2000-01-01T00:00:00.000001Z");
        assert_eq!(
            text(-86_400_000_000).unwrap(),
            "1999-12-31T00:00:00.000000Z"
        );
        assert_eq!(text(i64::MAX), None);
        assert_eq!(text(i64::MIN), None);
        assert!(time_text(&[1, 2]).is_err());
    }

    #[test]
    fn splitter_finds_whole_rows_and_rejects_other_streams() {
        let mut row = Vec::new();
        row.extend_from_slice(&(COLUMNS as i16).to_be_bytes());
        for i in 0..COLUMNS {
            field(&mut row, (i % 3 != 0).then_some(b"xy".as_slice()));
        }
        let mut stream = SIGNATURE.to_vec();
        stream.extend_from_slice(&[0; 8]);
        for _ in 0..3 {
            stream.extend_from_slice(&row);
        }
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        // Fed byte by byte, the splitter sees three whole rows, then the end.
        let mut s = RowSplitter::default();
        let mut buf = Vec::new();
        let mut rows = Vec::new();
        for b in &stream {
            buf.push(*b);
            s.scan(&mut buf).unwrap();
            if s.whole_bytes() > 0 {
                rows.push(s.take(&mut buf));
            }
        }
        assert!(s.ended);
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| *r == row));
        // Each parses to an error, not a panic (the id is NULL).
        let parsed = parse_rows(rows.concat());
        assert_eq!(parsed.len(), 3);
        assert!(parsed.iter().all(|r| r.is_err()));

        let mut s = RowSplitter::default();
        let mut text = b"1\t2\n".repeat(10);
        assert!(s.scan(&mut text).is_err());
        let mut s = RowSplitter::default();
        let mut wrong = stream[..HEADER_LEN].to_vec();
        wrong.extend_from_slice(&3i16.to_be_bytes());
        assert!(s.scan(&mut wrong).is_err());
    }
}
