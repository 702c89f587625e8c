//! Inline SVG charts: stacked bars per day, and latency ranges per tool on a log scale.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::LatencyRow;

const COLORS: [&str; 8] = [
    "#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

fn esc(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}

/// Bars per day, stacked by series (one color each), with a legend.
pub fn stacked_days(title: &str, days: &[String], series: &BTreeMap<String, Vec<u64>>) -> String {
    let (w, h, left, bottom, top) = (900.0, 260.0, 50.0, 30.0, 30.0);
    let n = days.len().max(1);
    let totals: Vec<u64> = (0..n)
        .map(|i| {
            series
                .values()
                .map(|v| v.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bw = (w - left - 10.0) / n as f64;
    let plot_h = h - bottom - top;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{y}" stroke="#888"/><line x1="{left}" y1="{y}" x2="{x}" y2="{y}" stroke="#888"/><text x="{tx}" y="{ty}" font-size="11" text-anchor="end">{m}</text><text x="{tx}" y="{y}" font-size="11" text-anchor="end">0</text>"##,
        y = h - bottom,
        x = w - 10.0,
        tx = left - 4.0,
        ty = top + 4.0,
        m = max as u64
    );
    for i in 0..n {
        let mut y = h - bottom;
        for (k, (name, v)) in series.iter().enumerate() {
            let c = v.get(i).copied().unwrap_or(0);
            if c == 0 {
                continue;
            }
            let bh = c as f64 / max * plot_h;
            y -= bh;
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {}</title></rect>"#,
                left + i as f64 * bw,
                y,
                (bw - 1.0).max(0.5),
                bh,
                COLORS[k % COLORS.len()],
                esc(days.get(i).map(String::as_str).unwrap_or("")),
                esc(name),
                c
            );
        }
        if i % 15 == 0 {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
                left + i as f64 * bw,
                h - bottom + 14.0,
                esc(days.get(i).map(String::as_str).unwrap_or(""))
            );
        }
    }
    let mut lx = left;
    for (k, name) in series.keys().enumerate() {
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="6" width="10" height="10" fill="{}"/><text x="{:.1}" y="15" font-size="11">{}</text>"#,
            COLORS[k % COLORS.len()],
            lx + 14.0,
            esc(name)
        );
        lx += 24.0 + 7.0 * name.len() as f64;
    }
    s.push_str("</svg>");
    s
}

/// One row per tool: a bar from p50 to p95 and a tick at the max, on a log scale of ms.
pub fn latency(rows: &[LatencyRow]) -> String {
    let (w, left, row_h, top) = (900.0, 170.0, 22.0, 24.0);
    let h = top + row_h * rows.len().max(1) as f64 + 24.0;
    let max = rows.iter().map(|r| r.max_ms).fold(1.0f64, f64::max);
    let lo = 0.1f64;
    let scale = |ms: f64| {
        left + (ms.max(lo) / lo).log10() / (max / lo).log10().max(1e-9) * (w - left - 20.0)
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h:.0}" width="100%" role="img" aria-label="call latency per tool"><title>call latency per tool (ms, log scale): bar p50 to p95, tick at max</title>"#
    );
    let mut tick = lo;
    while tick <= max * 1.0001 {
        let x = scale(tick);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle">{tick} ms</text>"##,
            h - 20.0,
            h - 6.0
        );
        tick *= 10.0;
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let (x1, x2, xm) = (scale(r.p50_ms), scale(r.p95_ms), scale(r.max_ms));
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="end">{}</text><rect x="{x1:.1}" y="{:.1}" width="{:.1}" height="12" fill="#1f77b4"><title>{}: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms</title></rect><line x1="{xm:.1}" y1="{:.1}" x2="{xm:.1}" y2="{:.1}" stroke="#d62728" stroke-width="2"/>"##,
            left - 6.0,
            y + 11.0,
            esc(&r.tool),
            y + 1.0,
            (x2 - x1).max(2.0),
            esc(&r.tool),
            r.p50_ms,
            r.p95_ms,
            r.max_ms,
            y,
            y + 14.0
        );
    }
    s.push_str("</svg>");
    s
}
