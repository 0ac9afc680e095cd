//! The proof benchmark's chart: latency over time as hand-written SVG, one
//! panel per connection mode, handover windows shaded.

use std::fmt::Write;
use std::time::Duration;

use overseer_harness::openloop::{percentile, Sample};

/// One panel: a mode's samples under overseer and directly, and its windows.
pub struct Panel<'a> {
    pub title: String,
    pub overseer: &'a [Sample],
    pub direct: &'a [Sample],
    /// Handover (or upgrade) windows, as (trigger, end) since the load started.
    pub windows: Vec<(Duration, Duration)>,
}

/// One slice of schedule: latencies (ms) of its successful requests and its failures.
pub struct Bucket {
    /// Start, in seconds since the load started.
    pub at: f64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub failed: usize,
}

/// Buckets of one run, in time order.
pub type Series = Vec<Bucket>;

/// Groups samples by scheduled time into `bucket`-long slices.
pub fn series(samples: &[Sample], bucket: Duration) -> Series {
    let Some(last) = samples.iter().map(|s| s.scheduled).max() else {
        return Vec::new();
    };
    let n = (last.as_secs_f64() / bucket.as_secs_f64()) as usize + 1;
    let mut lat: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut failed = vec![0usize; n];
    for s in samples {
        let i = (s.scheduled.as_secs_f64() / bucket.as_secs_f64()) as usize;
        match s.failure {
            None => lat[i].push(s.latency.as_secs_f64() * 1e3),
            Some(_) => failed[i] += 1,
        }
    }
    lat.into_iter()
        .zip(failed)
        .enumerate()
        .map(|(i, (mut v, f))| {
            v.sort_by(f64::total_cmp);
            Bucket {
                at: i as f64 * bucket.as_secs_f64(),
                p50: percentile(&v, 50.0),
                p99: percentile(&v, 99.0),
                max: v.last().copied(),
                failed: f,
            }
        })
        .collect()
}

const WIDTH: f64 = 1000.0;
const PANEL: f64 = 280.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 40.0;

/// The whole SVG document.
pub fn svg(panels: &[Panel<'_>], bucket: Duration, caption: &str) -> String {
    let height = PANEL * panels.len() as f64 + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="{}" fill="#444">{}</text>"##,
        height - 12.0,
        escape(caption)
    );
    for (i, p) in panels.iter().enumerate() {
        panel(&mut out, p, bucket, PANEL * i as f64);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, p: &Panel<'_>, bucket: Duration, y0: f64) {
    let ours = series(p.overseer, bucket);
    let theirs = series(p.direct, bucket);
    let span = ours
        .iter()
        .chain(&theirs)
        .map(|b| b.at + bucket.as_secs_f64())
        .fold(1.0, f64::max);
    let top_ms = ours
        .iter()
        .chain(&theirs)
        .filter_map(|b| b.max)
        .fold(1.0, f64::max);
    // Log scale from 0.01 ms up to the next power of ten above the largest latency.
    let (lo, hi) = (-2.0, top_ms.log10().ceil().max(0.0));
    let plot_h = PANEL - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / span * (WIDTH - LEFT - RIGHT);
    let y = |ms: f64| y0 + TOP + plot_h * (1.0 - (ms.max(1e-2).log10() - lo) / (hi - lo));
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="13">{}</text>"#,
        y0 + 14.0,
        escape(&p.title)
    );
    for (from, to) in &p.windows {
        let (a, b) = (x(from.as_secs_f64()), x(to.as_secs_f64()));
        let _ = writeln!(
            out,
            r##"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{plot_h:.1}" fill="#f5a623" fill-opacity="0.15"/><line x1="{a:.1}" x2="{a:.1}" y1="{:.1}" y2="{:.1}" stroke="#f5a623" stroke-width="1"/>"##,
            y0 + TOP,
            (b - a).max(1.0),
            y0 + TOP,
            y0 + TOP + plot_h
        );
    }
    // Axes and grid: one line per decade, one tick per second.
    let mut decade = lo;
    while decade <= hi {
        let ms = 10f64.powf(decade);
        let yy = y(ms);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} ms</text>"##,
            WIDTH - RIGHT,
            LEFT - 4.0,
            yy + 4.0,
            trim(ms)
        );
        decade += 1.0;
    }
    let step = (span / 12.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= span {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t} s</text>"#,
            x(t),
            y0 + TOP + plot_h + 16.0
        );
        t += step;
    }
    let line = |out: &mut String,
                s: &Series,
                pick: fn(&Bucket) -> Option<f64>,
                color: &str,
                width: f64| {
        let points: Vec<String> = s
            .iter()
            .filter_map(|b| pick(b).map(|v| format!("{:.1},{:.1}", x(b.at), y(v))))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{}"/>"#,
            points.join(" ")
        );
    };
    line(out, &theirs, |b| b.p99, "#999", 1.0);
    line(out, &ours, |b| b.p50, "#7fb3e6", 1.0);
    line(out, &ours, |b| b.p99, "#1f5fa8", 1.5);
    for b in ours.iter().filter(|b| b.failed > 0) {
        let _ = writeln!(
            out,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#d0021b"><title>{} failed</title></circle>"##,
            x(b.at),
            y0 + TOP + 4.0,
            b.failed
        );
    }
    let legend = [
        ("#1f5fa8", "p99 under overseer"),
        ("#7fb3e6", "p50 under overseer"),
        (
            "#999",
            "p99 direct (no overseer; a process started and ended beside it on the same schedule)",
        ),
        ("#f5a623", "handover window"),
        ("#d0021b", "failed requests"),
    ];
    for (i, (color, label)) in legend.iter().enumerate() {
        let lx = LEFT + 170.0 * i as f64;
        let ly = y0 + 20.0;
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="{ly}" width="10" height="8" fill="{color}"/><text x="{}" y="{}">{label}</text>"#,
            lx + 14.0,
            ly + 8.0
        );
    }
}

fn trim(ms: f64) -> String {
    let s = format!("{ms:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
