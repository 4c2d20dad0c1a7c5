//! `volmig rewrite-sources`: point the containers' stored volume Source
//! paths at this data-root, with dockerd stopped.
//!
//! dockerd 20.10.3 to 25.x evaluate the Source stored in config.v2.json for
//! a z/Z mount (`-v name:/p` has one by default), so a data-root moved to
//! another path fails with `error evaluating symlinks from mount source`.
//! `volmig import` rewrites the Sources itself when it commits with the
//! daemon stopped; after a live import, or a data-root moved by hand, this
//! is the command. It refuses while a dockerd runs on the data-root: the
//! daemon holds every container in memory and writes its own copy back.

use std::fmt::Write as _;

use anyhow::{bail, Context};
use clap::Args;

use super::daemon::DaemonContext;
use super::{emit, emit_json, render, Cli, Outcome};
use crate::dataroot::metadata::{self, MetadataError};
use crate::dataroot::{config_rewrite, containers, DataRoot};
use crate::import::ImportLock;

#[derive(Debug, Args)]
pub struct RewriteSourcesArgs {
    /// Containers whose configs to rewrite: full ID, unique ID prefix, or name.
    #[arg(value_name = "CONTAINER", required_unless_present = "all")]
    pub containers: Vec<String>,

    /// Every container of the data-root.
    #[arg(long, conflicts_with = "containers")]
    pub all: bool,
}

/// What happened to one container's config.
enum Rewritten {
    Changed,
    Unchanged,
    Failed(String),
}

pub fn run(cli: &Cli, args: &RewriteSourcesArgs) -> anyhow::Result<Outcome> {
    let root = DataRoot::open(&cli.data_root, cli.userns_remap)?;
    refuse_while_dockerd_runs(cli, &root)?;
    // One writer at a time, and never beside an import (config_rewrite's
    // temp file is then known to be a leftover).
    let _lock = ImportLock::acquire(&root.import_lock(), false)?;
    let slots = containers::load_all(&root)
        .with_context(|| format!("cannot read `{}`", root.containers_dir().display()))?;
    let selected = super::verify::select(&slots, &args.containers, args.all, &root)?;
    let results: Vec<(&containers::ContainerSlot, Rewritten)> = selected
        .into_iter()
        .map(|slot| {
            let outcome = match &slot.loaded {
                Err(e) => Rewritten::Failed(format!("`{}`: {}", e.path.display(), e.reason)),
                Ok(c) => match config_rewrite::point_container_sources_at(&root, c) {
                    Ok(true) => Rewritten::Changed,
                    Ok(false) => Rewritten::Unchanged,
                    Err(e) => Rewritten::Failed(format!(
                        "cannot rewrite `{}`: {e}",
                        c.config_path().display()
                    )),
                },
            };
            (slot, outcome)
        })
        .collect();
    let changed = results
        .iter()
        .filter(|(_, r)| matches!(r, Rewritten::Changed))
        .count();
    let failed = results
        .iter()
        .filter(|(_, r)| matches!(r, Rewritten::Failed(_)))
        .count();
    if failed > 0 && changed == 0 {
        let reasons: Vec<String> = results
            .iter()
            .filter_map(|(_, r)| match r {
                Rewritten::Failed(why) => Some(why.clone()),
                _ => None,
            })
            .collect();
        bail!("nothing rewritten: {}", reasons.join("; "));
    }
    if cli.json {
        emit_json(&document(&root, &results, failed == 0))?;
    } else {
        emit(&text(&root, &results, changed, cli.quiet))?;
    }
    Ok(if failed == 0 {
        Outcome::Good
    } else {
        Outcome::Broken
    })
}

/// A running daemon would undo the rewrite: refused (exit 2) with the
/// commands that work.
fn refuse_while_dockerd_runs(cli: &Cli, root: &DataRoot) -> anyhow::Result<()> {
    let again = "stop dockerd (systemctl stop docker), run this again, then start it (systemctl start docker)";
    let daemon = DaemonContext::probe(cli, root);
    if daemon.running() {
        bail!(
            "the dockerd answering at {} serves `{}` and keeps each container's volume Sources in memory: it would write the old ones back; {again}",
            daemon.host,
            root.given().display()
        );
    }
    if let Err(MetadataError::Locked { path }) = metadata::read_store(&root.metadata_db()) {
        bail!("`{}` is locked: a dockerd is running on this data-root and keeps each container's volume Sources in memory; {again}", path.display());
    }
    Ok(())
}

fn who(slot: &containers::ContainerSlot) -> String {
    slot.name().filter(|n| !n.is_empty()).map_or_else(
        || containers::short_id(&slot.id).to_string(),
        str::to_string,
    )
}

/// `rewrite-sources --json`.
#[derive(Debug, serde::Serialize)]
struct Document<'a> {
    ok: bool,
    data_root: &'a std::path::Path,
    rewritten: Vec<ContainerDoc<'a>>,
    unchanged: Vec<ContainerDoc<'a>>,
    failed: Vec<ContainerDoc<'a>>,
}

#[derive(Debug, serde::Serialize)]
struct ContainerDoc<'a> {
    id: &'a str,
    name: String,
    config: std::path::PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

fn document<'a>(
    root: &'a DataRoot,
    results: &'a [(&containers::ContainerSlot, Rewritten)],
    ok: bool,
) -> Document<'a> {
    let pick = |want: fn(&Rewritten) -> bool| -> Vec<ContainerDoc<'a>> {
        results
            .iter()
            .filter(|(_, r)| want(r))
            .map(|(slot, r)| ContainerDoc {
                id: &slot.id,
                name: who(slot),
                config: root.container_config(&slot.id),
                error: match r {
                    Rewritten::Failed(why) => Some(why.as_str()),
                    _ => None,
                },
            })
            .collect()
    };
    Document {
        ok,
        data_root: root.path(),
        rewritten: pick(|r| matches!(r, Rewritten::Changed)),
        unchanged: pick(|r| matches!(r, Rewritten::Unchanged)),
        failed: pick(|r| matches!(r, Rewritten::Failed(_))),
    }
}

fn text(
    root: &DataRoot,
    results: &[(&containers::ContainerSlot, Rewritten)],
    changed: usize,
    quiet: bool,
) -> String {
    let mut out = String::new();
    for (slot, r) in results {
        let name = who(slot);
        match r {
            Rewritten::Failed(why) => {
                let _ = writeln!(out, "error: {name}: {why}");
            }
            _ if quiet => {}
            Rewritten::Changed => {
                let _ = writeln!(
                    out,
                    "{name}: volume Sources pointed at `{}`",
                    root.volumes_dir().display()
                );
            }
            Rewritten::Unchanged => {
                let _ = writeln!(
                    out,
                    "{name}: unchanged (its volume Sources already point here)"
                );
            }
        }
    }
    if !quiet {
        let _ = writeln!(
            out,
            "{} rewritten; start dockerd now (systemctl start docker)",
            render::count(changed, "config", "configs")
        );
    }
    out
}
