//! `overseer ledger show` and `overseer ledger reset-floor`: a
//! self-upgrading binary's ledger, and the way out of a release signed with
//! a mistaken, too-high version (`overseer::ledger`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::failure::Failure;

#[derive(Args, Debug)]
pub(crate) struct LedgerArgs {
    #[command(subcommand)]
    command: LedgerCommand,
}

#[derive(Subcommand, Debug)]
enum LedgerCommand {
    /// Prints the ledger: the highest signed version seen (the floor), the
    /// failed releases, the installed release.
    Show(ShowArgs),
    /// Sets the floor back after a release was signed with a wrong,
    /// too-high version; every later release was refused as not newer.
    ///
    /// A master running on that binary applies it at its next poll, with
    /// no restart: it lowers the installed version it remembers to the new
    /// floor too, and considers again the releases it refused as not newer.
    /// Failed releases stay remembered.
    #[command(after_help = RESET_EXAMPLE)]
    ResetFloor(ResetArgs),
    /// Forgets the highest fleet manifest serial seen, after the fleet's
    /// manifest was started over (its serial back at 1), which hosts refuse
    /// as a replay otherwise. A master running on that binary accepts the
    /// manifest at its next poll.
    ResetSerial(ShowArgs),
}

#[derive(Args, Debug)]
struct ShowArgs {
    /// The self-upgrading binary (as `overseer run` runs it, or your
    /// program's own file); its ledger is `.NAME.overseer-state` beside it.
    #[arg(long, value_name = "PATH")]
    bin: PathBuf,
}

#[derive(Args, Debug)]
struct ResetArgs {
    /// The self-upgrading binary; its ledger is `.NAME.overseer-state`
    /// beside it.
    #[arg(long, value_name = "PATH")]
    bin: PathBuf,
    /// The new floor: the version the mis-versioned release really was, or
    /// the one installed (signed releases not newer stay refused). Without
    /// it the floor is removed: the next signed release installs whatever
    /// its version.
    #[arg(long, value_name = "VERSION")]
    to: Option<String>,
}

const RESET_EXAMPLE: &str = "\
Example: 1.0.1 was signed as 99.0.0 by mistake, so 1.0.2 is refused:
  overseer ledger reset-floor --bin /usr/local/bin/myapp --to 1.0.1

Exit status: 0 when reset; 1 when the ledger cannot be read (it is left as
it is: repair or remove it) or written; 2 for bad input.";

pub(crate) fn run(args: LedgerArgs) -> Result<(), Failure> {
    match args.command {
        LedgerCommand::Show(a) => show(&a.bin),
        LedgerCommand::ResetFloor(a) => reset(&a.bin, a.to.as_deref()),
        LedgerCommand::ResetSerial(a) => {
            check_binary(&a.bin)?;
            let before = overseer::ledger::show(&a.bin).map_err(failure)?;
            overseer::ledger::reset_serial(&a.bin).map_err(failure)?;
            println!(
                "the fleet manifest serial seen by {} is forgotten (was {}); a master running it accepts the manifest at its next poll",
                a.bin.display(),
                before
                    .manifest_serial
                    .map_or("none".to_string(), |s| s.to_string())
            );
            Ok(())
        }
    }
}

/// Bad input (exit status 2): a binary path that is not a file.
fn check_binary(bin: &Path) -> Result<(), Failure> {
    if bin.is_file() {
        Ok(())
    } else {
        Err(Failure::Usage(format!(
            "--bin {}: no such file (give the self-upgrading binary's path)",
            bin.display()
        )))
    }
}

fn failure(e: overseer::Error) -> Failure {
    match e {
        overseer::Error::InvalidVersion(_) => Failure::Usage(format!("--to: {e}")),
        e => Failure::Runtime(e.to_string()),
    }
}

fn show(bin: &Path) -> Result<(), Failure> {
    check_binary(bin)?;
    let ledger = overseer::ledger::show(bin).map_err(failure)?;
    print!("{}", describe(&ledger));
    Ok(())
}

fn reset(bin: &Path, to: Option<&str>) -> Result<(), Failure> {
    check_binary(bin)?;
    let before = overseer::ledger::show(bin).map_err(failure)?;
    let after = overseer::ledger::reset_floor(bin, to).map_err(failure)?;
    println!(
        "the floor of {} is now {} (was {}); a master running it applies this at its next poll",
        bin.display(),
        after.highest_version.as_deref().unwrap_or("none"),
        before.highest_version.as_deref().unwrap_or("none"),
    );
    Ok(())
}

fn describe(ledger: &overseer::ledger::Ledger) -> String {
    let mut text = format!("ledger: {}", ledger.path.display());
    if !ledger.exists {
        text.push_str(" (none yet: no release seen)");
    }
    text.push('\n');
    text.push_str(&format!(
        "highest signed version seen (the floor): {}\n",
        ledger.highest_version.as_deref().unwrap_or("none")
    ));
    match &ledger.installed {
        Some(i) => text.push_str(&format!(
            "installed release: {} (sha256 {})\n",
            i.tag, i.sha256
        )),
        None => text.push_str("installed release: not recorded\n"),
    }
    text.push_str(&format!(
        "failed releases, not tried again: {}\n",
        ledger.bad_releases.len()
    ));
    for sha in &ledger.bad_releases {
        text.push_str(&format!("  {sha}\n"));
    }
    text.push_str(&format!("floor resets: {}\n", ledger.floor_resets));
    if let Some(serial) = ledger.manifest_serial {
        text.push_str(&format!("highest fleet manifest serial seen: {serial}\n"));
    }
    text
}
