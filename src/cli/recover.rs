//! `volmig recover`: finish or roll back interrupted imports.

use std::fmt::Write as _;

use clap::Args;

use super::{emit, emit_json, render, Cli, Outcome};
use crate::dataroot::DataRoot;
use crate::import::delta::DeltaRecovery;
use crate::import::{self, Recovered, RecoveryOutcome};

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Wait for an import that is running on this data-root instead of
    /// failing.
    #[arg(long)]
    pub wait: bool,
}

pub fn run(cli: &Cli, args: &RecoverArgs) -> anyhow::Result<Outcome> {
    let root = DataRoot::open(&cli.data_root, cli.userns_remap)?;
    super::signals::poll(
        "recovery finishes first, then volmig stops",
        "an interrupted import may be left: run `volmig recover` again",
    );
    let done = import::recover(&root, args.wait)?;
    let ok = done.iter().all(|r| match &r.outcome {
        RecoveryOutcome::Finished { pending, .. } => pending.is_empty(),
        _ => true,
    });
    if cli.json {
        emit_json(&super::output::RecoverDoc {
            ok,
            data_root: root.path(),
            recovered: done.iter().map(super::output::RecoveredDoc::of).collect(),
        })?;
    } else if !cli.quiet || !ok {
        emit(&recovered_text(&root, &done))?;
    }
    Ok(if ok { Outcome::Good } else { Outcome::Broken })
}

/// One line per recovered import, as import and recover print them.
pub fn recovered_lines(out: &mut String, done: &[Recovered]) {
    for r in done {
        let _ = match &r.outcome {
            RecoveryOutcome::Finished {
                journal, pending, ..
            } => writeln!(
                out,
                "recovered: finished the interrupted import of a bundle from {}:{} ({} moved into place){}",
                journal.bundle.source_host,
                journal.bundle.source_data_root,
                render::count(journal.moves.len(), "directory", "directories"),
                pending
                    .iter()
                    .map(|p| format!("\n  warning: {p}"))
                    .collect::<String>()
            ),
            RecoveryOutcome::RolledBack { journal } => writeln!(
                out,
                "recovered: rolled back the failed import of a bundle from {}:{}: the target is as it was before it",
                journal.bundle.source_host, journal.bundle.source_data_root
            ),
            RecoveryOutcome::RemovedLeftover { bytes } => writeln!(
                out,
                "recovered: removed `{}` ({}), staging of an import that died before its commit",
                r.staging.display(),
                render::bytes(*bytes)
            ),
            RecoveryOutcome::Delta(DeltaRecovery::RolledBack { base, .. }) => writeln!(
                out,
                "recovered: rolled back the interrupted import of a delta: its volumes hold round {base} again, as before it"
            ),
            RecoveryOutcome::Delta(DeltaRecovery::Finished { round, .. }) => writeln!(
                out,
                "recovered: finished the import of a delta: its volumes hold round {round}"
            ),
        };
    }
}

fn recovered_text(root: &DataRoot, done: &[Recovered]) -> String {
    let mut out = String::new();
    if done.is_empty() {
        let _ = writeln!(
            out,
            "nothing to recover in {}: no interrupted import",
            root.path().display()
        );
    }
    recovered_lines(&mut out, done);
    out
}
