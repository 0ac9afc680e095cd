//! The printed report: one table per connection mode (overseer, direct and
//! their ratio), then the targets with PASS/FAIL.

use serde_json::{json, Value};

use overseer_harness::openloop::percentile;
use overseer_harness::release::IdleCost;

use crate::run::Run;
use crate::scenario::Capacity;
use crate::{fmt_ms, min_med_max, opt, ratio, ratio_opt, sorted, Mode, Options, KINDS};

/// Above this share of late sends, a run's latency is flagged.
const LATE_WARNING_PERCENT: f64 = 5.0;

/// The printed report and whether every target passed.
pub struct Report {
    pub text: String,
    pub all_pass: bool,
    pub targets: Vec<Value>,
}

/// A target's verdict.
#[derive(Clone, Copy)]
enum Verdict {
    Pass,
    Fail,
    /// Nothing to judge (the figure was not measured).
    NotMeasured,
    /// Below the threshold, but by less than two equal servers differ on
    /// this machine: the measurement cannot tell.
    Unresolved,
}

fn judged(pass: Option<bool>) -> Verdict {
    match pass {
        Some(true) => Verdict::Pass,
        Some(false) => Verdict::Fail,
        None => Verdict::NotMeasured,
    }
}

/// Throughput ≥ 0.98 × direct. With a capacity control (a second direct
/// server measured against the first), a ratio under 0.98 by no more than
/// the control's own distance from 1 is unresolved rather than failed: the
/// machine's noise covers it.
fn throughput_verdict(ratio: f64, capacity: Option<&Capacity>) -> Verdict {
    if ratio >= 0.98 {
        return Verdict::Pass;
    }
    match capacity.map(|c| (c.median_control_ratio() - 1.0).abs()) {
        Some(noise) if 0.98 - ratio <= noise => Verdict::Unresolved,
        _ => Verdict::Fail,
    }
}

pub fn report(
    opts: &Options,
    results: &[(Mode, Run, Run, Option<Run>)],
    capacity: Option<&Vec<Capacity>>,
    idle: Option<&IdleCost>,
) -> Report {
    use std::fmt::Write;
    let mut out = String::new();
    let mut targets = Vec::new();
    let mut all_pass = true;
    let mut target =
        |out: &mut String, mode: Mode, name: &str, verdict: Verdict, detail: String| {
            all_pass &= matches!(verdict, Verdict::Pass | Verdict::NotMeasured);
            let verdict = match verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
                Verdict::NotMeasured => "n/a",
                Verdict::Unresolved => "UNRESOLVED",
            };
            let _ = writeln!(out, "  [{verdict}] {name}: {detail}");
            targets.push(
                json!({"mode": mode.key(), "target": name, "verdict": verdict, "measured": detail}),
            );
        };
    let _ = writeln!(
        out,
        "\nDefinitions: latency runs from each request's scheduled send time to its complete answer \
         (open loop, {} req/s over {} connections). A handover window runs from the trigger (SIGUSR2; \
         for upgrades, publishing the release) to the old worker's exit (the master's \
         `worker N drained` line); a request is in a window if [scheduled, answered] overlaps one. \
         Steady = every other request. Log times are polled every 1 ms. The direct column's windows \
         are a control: on the same schedule a second process of the same binary is started beside \
         the direct server (on a port of its own), stopped with SIGTERM once it says it serves, and \
         its window runs from its start to its exit: what a process starting and ending costs this \
         machine's busy server, with no handover.",
        opts.rate, opts.connections
    );
    for (mode, ours, direct, upgrades) in results {
        let _ = writeln!(out, "\n== {} ==", mode.name());
        for line in ours.complaints.iter().chain(&direct.complaints).take(10) {
            let _ = writeln!(out, "  server said: {line}");
        }
        for s in ours
            .samples
            .iter()
            .chain(&direct.samples)
            .filter(|s| s.failure.is_some())
            .take(10)
        {
            let f = s
                .failure
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            let _ = writeln!(out, "  failure at {:.3} s: {f}", s.scheduled.as_secs_f64());
        }
        let mut rows: Vec<(String, String, String, String)> = Vec::new();
        let mut row =
            |label: &str, a: String, b: String, r: String| rows.push((label.into(), a, b, r));
        row(
            "requests scheduled",
            ours.samples.len().to_string(),
            direct.samples.len().to_string(),
            String::new(),
        );
        row(
            "answered 2xx per second",
            format!("{:.0}", ours.throughput()),
            format!("{:.0}", direct.throughput()),
            ratio(ours.throughput(), direct.throughput()),
        );
        row(
            "sent >1 ms late (generator behind)",
            format!("{:.2} %", ours.late_percent()),
            format!("{:.2} %", direct.late_percent()),
            String::new(),
        );
        let (fo, fd, fw) = (
            ours.failures(|_| true),
            direct.failures(|_| true),
            ours.failures(|s| ours.in_window(s)),
        );
        for kind in KINDS {
            row(
                &format!("failed: {kind} (in windows)"),
                format!("{} ({})", fo[kind], fw[kind]),
                fd[kind].to_string(),
                String::new(),
            );
        }
        let (steady, window, base) = (ours.steady_ms(), ours.window_ms(), direct.steady_ms());
        row(
            "requests steady / in windows",
            format!("{} / {}", steady.len(), window.len()),
            base.len().to_string(),
            String::new(),
        );
        for (label, p) in [("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9)] {
            let (a, b) = (percentile(&steady, p), percentile(&base, p));
            row(
                &format!("latency {label} steady"),
                fmt_ms(a),
                fmt_ms(b),
                ratio_opt(a, b),
            );
        }
        let base_window = direct.window_ms();
        for (label, p) in [("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9)] {
            let (a, b) = (percentile(&window, p), percentile(&base_window, p));
            row(
                &format!("latency {label} handover windows"),
                fmt_ms(a),
                fmt_ms(b),
                ratio_opt(a, b),
            );
        }
        row(
            "handovers ready / failed",
            format!(
                "{} / {}",
                ours.trigger_to_ready_ms().len(),
                ours.failed_handovers()
            ),
            format!(
                "{} / {}",
                direct.trigger_to_ready_ms().len(),
                direct.failed_handovers()
            ),
            String::new(),
        );
        row(
            "trigger → ready min/med/max",
            min_med_max(&ours.trigger_to_ready_ms()),
            min_med_max(&direct.trigger_to_ready_ms()),
            String::new(),
        );
        row(
            "  trigger → program's first line",
            min_med_max(&ours.overhead_ms()),
            min_med_max(&direct.overhead_ms()),
            String::new(),
        );
        row(
            "  program's first line → ready",
            min_med_max(&ours.program_ms()),
            String::new(),
            String::new(),
        );
        row(
            "master 'ready after' min/med/max",
            min_med_max(&sorted(ours.ready_after_ms.clone())),
            String::new(),
            String::new(),
        );
        let profile = |run: &Run| {
            run.p99_after_trigger_ms(10)
                .iter()
                .map(|p| p.map_or("-".into(), |p| format!("{p:.1}")))
                .collect::<Vec<String>>()
                .join(" ")
        };
        row(
            "p99 by ms after trigger: 0..9 ms",
            profile(ours),
            profile(direct),
            String::new(),
        );
        row(
            "window length (trigger → old exit)",
            min_med_max(&ours.window_len_ms()),
            min_med_max(&direct.window_len_ms()),
            String::new(),
        );
        row(
            "master RSS before / peak / after",
            format!(
                "{} / {} / {} KiB",
                opt(ours.before.rss_kb),
                opt(ours.rss_peak_kb),
                opt(ours.after.rss_kb)
            ),
            String::new(),
            String::new(),
        );
        row(
            "  of which anonymous (not code pages)",
            format!(
                "{} / {} / {} KiB",
                opt(ours.before.anon_kb),
                opt(ours.anon_at_peak_kb),
                opt(ours.after.anon_kb)
            ),
            String::new(),
            String::new(),
        );
        row(
            "master CPU over the run",
            ours.cpu_percent()
                .map_or("?".into(), |c| format!("{c:.2} %")),
            String::new(),
            String::new(),
        );
        row(
            "master open fds before → after",
            format!("{} → {}", opt(ours.before.fds), opt(ours.after.fds)),
            String::new(),
            String::new(),
        );
        if let Some(u) = upgrades {
            let (steady, window) = (u.steady_ms(), u.window_ms());
            row(
                "upgrades done / failed",
                format!(
                    "{} / {}",
                    u.trigger_to_ready_ms().len(),
                    u.failed_handovers()
                ),
                String::new(),
                String::new(),
            );
            row(
                "upgrade: requests / failed",
                format!("{} / {}", u.samples.len(), u.failed()),
                String::new(),
                String::new(),
            );
            row(
                "upgrade: published → ready min/med/max",
                min_med_max(&u.trigger_to_ready_ms()),
                String::new(),
                String::new(),
            );
            row(
                "upgrade: p99 steady / in windows",
                format!(
                    "{} / {}",
                    fmt_ms(percentile(&steady, 99.0)),
                    fmt_ms(percentile(&window, 99.0))
                ),
                String::new(),
                String::new(),
            );
            row(
                "upgrade: master RSS peak (anonymous), fds before → after",
                format!(
                    "{} KiB ({} KiB), {} → {}",
                    opt(u.rss_peak_kb),
                    opt(u.anon_at_peak_kb),
                    opt(u.before.fds),
                    opt(u.after.fds)
                ),
                String::new(),
                String::new(),
            );
        }
        let width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
        let a = rows
            .iter()
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(0)
            .max(8);
        let b = rows
            .iter()
            .map(|r| r.2.chars().count())
            .max()
            .unwrap_or(0)
            .max(6);
        let _ = writeln!(
            out,
            "  {:width$}  {:>a$}  {:>b$}  overseer/direct",
            "", "overseer", "direct"
        );
        for (label, x, y, r) in &rows {
            let _ = writeln!(out, "  {label:width$}  {x:>a$}  {y:>b$}  {r}");
        }

        // A generator that fell behind means the machine was overloaded or
        // stalled: its latency figures say more about the machine than the
        // server. Said next to the verdicts, so nobody misses it.
        let late = ours.late_percent().max(direct.late_percent());
        if late > LATE_WARNING_PERCENT {
            let _ = writeln!(
                out,
                "  note: the load generator sent {late:.1} % of requests over 1 ms late (more than {LATE_WARNING_PERCENT} %): the machine was overloaded or stalled during this run, so its latency figures are not representative"
            );
        }

        // Targets.
        let _ = writeln!(out, "  targets:");
        let upgrade_failed = upgrades.as_ref().map_or(0, Run::failed);
        let failed = ours.failed() + upgrade_failed;
        target(
            &mut out,
            *mode,
            "0 failed requests across handovers",
            judged(Some(failed == 0 && ours.failed_handovers() == 0)),
            format!(
                "{} failed of {} (+ {upgrade_failed} during upgrades); {} handover(s) failed",
                ours.failed(),
                ours.samples.len(),
                ours.failed_handovers()
            ),
        );
        let (ps, pw) = (percentile(&steady, 99.0), percentile(&window, 99.0));
        let (bs, bw) = (percentile(&base, 99.0), percentile(&base_window, 99.0));
        target(
            &mut out,
            *mode,
            "p99 in handover windows <= 1.5 x steady p99",
            judged(ps.zip(pw).map(|(s, w)| w <= 1.5 * s)),
            format!(
                "{} vs {} ({}); control, the direct server while a process of the same binary starts and ends beside it: {} vs {} ({})",
                fmt_ms(pw),
                fmt_ms(ps),
                ratio_opt(pw, ps),
                fmt_ms(bw),
                fmt_ms(bs),
                ratio_opt(bw, bs)
            ),
        );
        let cap = capacity.and_then(|c| c.iter().find(|c| c.mode == *mode));
        let (r, how) = match cap {
            Some(c) => (
                c.median_ratio(),
                format!(
                    "closed-loop capacity, median of {} rounds (x{:.3} to x{:.3}); mean {:.0} vs {:.0} req/s; server CPU per request implies x{:.3}; control, the direct server against itself: x{:.3}",
                    c.ratios.len(),
                    c.ratios.first().copied().unwrap_or(0.0),
                    c.ratios.last().copied().unwrap_or(0.0),
                    c.overseer_rps,
                    c.direct_rps,
                    c.median_cpu_ratio(),
                    c.median_control_ratio()
                ),
            ),
            None => (
                ours.throughput() / direct.throughput().max(1e-9),
                format!(
                    "open loop at {} req/s: {:.0} vs {:.0} answered/s (equal when both keep up; --max-throughput compares capacity)",
                    opts.rate,
                    ours.throughput(),
                    direct.throughput()
                ),
            ),
        };
        target(
            &mut out,
            *mode,
            "throughput >= 0.98 x direct",
            throughput_verdict(r, cap),
            format!("x{r:.3}: {how}"),
        );
        // Judged on every master of the run: the upgrade runs' master has
        // a fetcher, which the plain handover runs' master has not.
        let rss = ours.rss_peak_kb.max(ours.after.rss_kb);
        let upgrade_rss = upgrades
            .as_ref()
            .and_then(|u| u.rss_peak_kb.max(u.after.rss_kb));
        let mut rss_detail = format!(
            "peak {} KiB (anonymous {} KiB) without a fetcher",
            opt(rss),
            opt(ours.anon_at_peak_kb)
        );
        if let Some(u) = &upgrades {
            rss_detail += &format!(
                "; {} KiB (anonymous {} KiB) with the HTTP fetcher, during upgrades",
                opt(upgrade_rss),
                opt(u.anon_at_peak_kb)
            );
        }
        if let Some(idle) = idle {
            rss_detail += &format!(
                "; {} KiB (anonymous {} KiB) with the HTTP fetcher, idle",
                opt(idle.rss_kb),
                opt(idle.anon_kb)
            );
        }
        let idle_rss = idle.and_then(|i| i.rss_kb);
        target(
            &mut out,
            *mode,
            "master RSS < 4 MiB",
            judged(rss.max(upgrade_rss).max(idle_rss).map(|k| k < 4096)),
            rss_detail,
        );
        let overhead = ours.overhead_ms();
        target(
            &mut out,
            *mode,
            "handover overhead < 10 ms",
            judged(percentile(&overhead, 50.0).map(|m| m < 10.0)),
            format!(
                "median {} (max {}) from the trigger to the new program's first line: the master's \
                 reaction, starting the process (clone, exec) and the worker's set-up; the program's own start → ready is \
                 {} median; trigger → ready {} median",
                fmt_ms(percentile(&overhead, 50.0)),
                fmt_ms(overhead.last().copied()),
                fmt_ms(percentile(&ours.program_ms(), 50.0)),
                fmt_ms(percentile(&ours.trigger_to_ready_ms(), 50.0)),
            ),
        );
    }
    if let Some(cap) = capacity {
        let _ = writeln!(
            out,
            "\n== capacity (closed loop, {} clients, {:?} per server) ==",
            opts.connections, opts.capacity_secs
        );
        for c in cap {
            let _ = writeln!(
                out,
                "  {:24} overseer {:>8.0} req/s  direct {:>8.0} req/s  median x{:.3} (rounds {})  ({} failures)",
                c.mode.name(),
                c.overseer_rps,
                c.direct_rps,
                c.median_ratio(),
                c.ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(" "),
                c.failures
            );
            let _ = writeln!(
                out,
                "  {:24} server CPU per request: overseer {:.1} us (master and worker), direct {:.1} us; implied capacity median x{:.3} (rounds {})",
                "",
                c.overseer_cpu_us,
                c.direct_cpu_us,
                c.median_cpu_ratio(),
                c.cpu_ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(" "),
            );
            let _ = writeln!(
                out,
                "  {:24} control, a second direct server / the direct one: median x{:.3} (rounds {}): the spread equal servers get here",
                "",
                c.median_control_ratio(),
                c.control_ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(" "),
            );
        }
    }
    if let Some(idle) = idle {
        let _ = writeln!(
            out,
            "\n== idle master with the HTTP fetcher, polling an unchanged release every {:?} ==",
            idle.interval
        );
        let detail = format!(
            "{:.3} % over {:?} ({:.1} ms of CPU), {} requests ({} full downloads); RSS {} KiB (anonymous {} KiB)",
            idle.cpu_percent,
            idle.span,
            idle.cpu.as_secs_f64() * 1000.0,
            idle.requests,
            idle.downloads,
            opt(idle.rss_kb),
            opt(idle.anon_kb)
        );
        let pass = idle.cpu_percent < 0.1;
        let verdict = if pass { "PASS" } else { "FAIL" };
        all_pass &= pass;
        let name = "master idle CPU < 0.1 % while polling every second";
        let _ = writeln!(out, "  [{verdict}] {name}: {detail}");
        targets.push(json!({"mode": null, "target": name, "verdict": verdict, "measured": detail}));
    }
    let _ = writeln!(
        out,
        "\nproof bench: {}",
        if all_pass {
            "all targets PASS"
        } else {
            "some targets FAIL (or UNRESOLVED)"
        }
    );
    Report {
        text: out,
        all_pass,
        targets,
    }
}
