//! The server matrix: each third-party server of `examples/servers/` through
//! 20 restarts under load (4 keep-alive clients and 4 clients opening a
//! connection per request), once with its recipe and once as its user would
//! first run it (the baselines in `benches/servers/`), so the figures show
//! what each recipe buys.
//!
//! `cargo bench -p overseer-cli --bench servers [-- NAME…]` (the servers must be
//! installed: `scripts/test` does it). Prints a Markdown table; the latest
//! one is in docs/benchmarks.md.

#[path = "../tests/support/servers.rs"]
mod servers;

use std::path::Path;

use servers::{restarts_under_load, RESTARTS, SERVERS};

/// Where the baselines are.
const BASELINES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/servers");

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut rows = Vec::new();
    for recipe in servers::RECIPES {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == recipe.name) {
            continue;
        }
        if let Err(missing) = recipe.installed() {
            println!("{}: skipped, {missing}", recipe.name);
            continue;
        }
        for (variant, dir, env) in [
            ("recipe", Path::new(SERVERS), &[][..]),
            ("baseline", Path::new(BASELINES), &[][..]),
            // The baseline's `run` adds --steer-connections when STEER is set.
            (
                "baseline, steered",
                Path::new(BASELINES),
                &[("STEER", "1")][..],
            ),
        ] {
            let run = dir.join(recipe.name);
            // A run that cannot go on (a restart that fails, a worker that
            // never answers) is reported in its row; the others still run.
            let Ok(figures) = std::panic::catch_unwind(|| restarts_under_load(&run, env)) else {
                let row = format!(
                    "| {} | {variant} | did not finish (see above) | |",
                    recipe.name
                );
                println!("{row}");
                rows.push(row);
                continue;
            };
            let cells: Vec<String> = figures
                .iter()
                .map(|(_, stats)| {
                    let failed = stats.failures.len();
                    let kinds = if failed == 0 {
                        String::new()
                    } else {
                        let kinds: Vec<String> = stats
                            .failure_kinds()
                            .iter()
                            .map(|(kind, n)| format!("{n} {kind}"))
                            .collect();
                        format!(" ({})", kinds.join(", "))
                    };
                    format!("{} / **{failed}**{kinds}", stats.ok + failed as u64)
                })
                .collect();
            let row = format!("| {} | {variant} | {} |", recipe.name, cells.join(" | "));
            println!("{row}");
            rows.push(row);
        }
    }
    println!();
    println!("{RESTARTS} restarts each; requests / failed:");
    println!();
    println!("| server | run | keep-alive | connection per request |");
    println!("|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
