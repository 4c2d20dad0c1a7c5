//! `volmig import`: a bundle into the target data-root, then verify.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::daemon::DaemonContext;
use super::progress::TermProgress;
use super::{emit, emit_json, render, Cli, Outcome};
use crate::dataroot::DataRoot;
use crate::import::{self, ImportOptions, ImportReport, MetadataOutcome, OnConflict};
use crate::report::Severity;
use crate::verify::{self, ContainerReport, VerifyOptions, World};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ConflictArg {
    /// List every conflict and write nothing.
    Fail,
    /// Keep a target volume whose content equals the bundle's; refuse others.
    SkipIdentical,
    /// Replace the target volume; the old one is removed only after the commit.
    Replace,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The bundle; `-` for stdin (e.g. from ssh).
    #[arg(value_name = "FILE")]
    pub input: PathBuf,

    /// What to do with volumes that already exist on the target.
    #[arg(long, value_enum, default_value = "fail")]
    pub on_conflict: ConflictArg,

    /// Read and check the whole bundle, print the plan, write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Wait for another import running on this data-root instead of
    /// failing (one import at a time per data-root).
    #[arg(long)]
    pub wait: bool,

    /// A bind-type volume whose data the bundle carries is laid down at
    /// its device path; with OLD=NEW (absolute paths, whole components),
    /// a device at OLD or below goes to NEW instead, and the volume's
    /// opts.json and metadata.db record say NEW. Repeatable.
    #[arg(long, value_name = "OLD=NEW", value_parser = parse_map_path)]
    pub map_path: Vec<(PathBuf, PathBuf)>,
}

/// `--map-path OLD=NEW`: two absolute paths without `..`.
fn parse_map_path(text: &str) -> Result<(PathBuf, PathBuf), String> {
    let (old, new) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not OLD=NEW, e.g. /srv/app/data=/data/app"))?;
    let check = |p: &str| -> Result<PathBuf, String> {
        let path = PathBuf::from(p);
        let plain = path.is_absolute()
            && path.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            });
        match plain && path.parent().is_some() {
            true => Ok(path),
            false => Err(format!(
                "`{p}` in `{text}` must be an absolute path below / without `.` or `..`"
            )),
        }
    };
    Ok((check(old)?, check(new)?))
}

/// Opens FILE or stdin; also returns the file's size when known.
pub fn open_input(path: &Path) -> anyhow::Result<(Box<dyn Read>, Option<u64>)> {
    if path.as_os_str() == "-" {
        return Ok((
            Box::new(BufReader::with_capacity(
                crate::bundle::IO_CHUNK,
                std::io::stdin(),
            )),
            None,
        ));
    }
    let file =
        File::open(path).with_context(|| format!("cannot open bundle `{}`", path.display()))?;
    let size = file.metadata().ok().map(|m| m.len());
    Ok((
        Box::new(BufReader::with_capacity(crate::bundle::IO_CHUNK, file)),
        size,
    ))
}

pub fn run(cli: &Cli, args: &ImportArgs) -> anyhow::Result<Outcome> {
    let root = super::open_root(cli, true)?;
    if let (None, Some(r), false) = (cli.userns_remap, root.remap_subtrees().first(), cli.quiet) {
        eprintln!(
            "note: `{}` also holds the userns-remap subtree {}: importing into the top level, ids unchanged; for a daemon started with --userns-remap, import with --userns-remap {r}",
            root.given().display(),
            r.dir_name()
        );
    }
    let (input, size) = open_input(&args.input)?;
    let policy = match args.on_conflict {
        ConflictArg::Fail => OnConflict::Fail,
        ConflictArg::SkipIdentical => OnConflict::SkipIdentical,
        ConflictArg::Replace => OnConflict::Replace,
    };
    super::signals::poll(
        "stopping: the staging directory is removed and nothing is written (during the commit: the commit finishes first)",
        "the staging directory may be left; the next import or `volmig recover` removes it",
    );
    let (input, progress) = TermProgress::reading(cli.quiet, input, size);
    progress.begin("importing", size);
    let daemon = DaemonContext::probe(cli, &root);
    let engine = daemon
        .engine
        .as_ref()
        .map(|e| e as &dyn crate::engine::Engine);
    let opts = ImportOptions {
        policy,
        dry_run: args.dry_run,
        wait: args.wait,
        map_paths: args.map_path.clone(),
    };
    let report = import::import(&root, input, &opts, engine, progress.as_ref())?;
    drop(progress);
    if report.dry_run {
        return dry_run_output(cli, &root, &report);
    }
    committed_output(cli, &root, &daemon, report)
}

/// A dry run's plan, and whether the import would proceed.
fn dry_run_output(cli: &Cli, root: &DataRoot, report: &ImportReport) -> anyhow::Result<Outcome> {
    let refuse = &report.refusals;
    if cli.json {
        emit_json(&super::output::ImportPlan::of(report))?;
    } else {
        emit(&dry_run_text(root, report, refuse, cli.quiet))?;
    }
    Ok(if refuse.is_empty() {
        Outcome::Good
    } else {
        Outcome::Refused
    })
}

/// After the commit: verify the carried containers, print, pick the code.
fn committed_output(
    cli: &Cli,
    root: &DataRoot,
    daemon: &DaemonContext,
    report: ImportReport,
) -> anyhow::Result<Outcome> {
    // The verdict: the target's scan, and every carried container. The
    // volumes are committed by now: nothing here may exit 2.
    let mut report = report;
    let verdicts = match super::verify::read_world(root, daemon.version) {
        Ok((mounts, scan, slots)) => {
            if scan.daemon_fatal() {
                report.pending.push(format!(
                    "dockerd would not start on `{}`: run `volmig scan` for the reason",
                    root.path().display()
                ));
            }
            let world = World {
                root,
                scan: &scan,
                mounts: &mounts,
                containers: &slots,
            };
            let opts = VerifyOptions {
                version: daemon.version,
                checkpoint: None,
                experimental: true,
                // A live import: the daemon keeps the containers' old
                // Sources in memory, and the fix must say to stop it.
                daemon_running: daemon.running()
                    || matches!(report.metadata, Some(MetadataOutcome::DaemonRunning)),
            };
            report
                .verify_slots
                .iter()
                .map(|s| verify::verify_container(&world, s, &opts))
                .collect()
        }
        Err(e) => {
            report.pending.push(format!(
                "the import committed, but its result cannot be verified: {e:#}"
            ));
            Vec::new()
        }
    };
    let verdicts: Vec<ContainerReport> = verdicts;
    // Not registered (or no labels) means dockerd does not know the volumes.
    let registration_failed = matches!(&report.metadata, Some(MetadataOutcome::Registered { failed, .. }) if !failed.is_empty())
        || matches!(report.metadata, Some(MetadataOutcome::DaemonRunning));
    let ok = verdicts.iter().all(|r| r.ok) && report.pending.is_empty() && !registration_failed;
    // The volumes are committed: a stdout that cannot be written must not
    // turn the outcome into exit 2 ("nothing changed").
    let printed = if cli.json {
        emit_json(&super::output::ImportDone::of(&report, &verdicts, ok))
    } else {
        emit(&import_text(root, &report, &verdicts, cli.quiet))
    };
    if let Err(e) = printed {
        if !super::is_broken_pipe(&e) {
            eprintln!("warning: the import committed, but its report cannot be printed: {e:#}");
        }
    }
    if let Some(signal) = report.interrupted {
        return Err(super::Interrupted {
            signal,
            message: format!(
                "{} arrived during the commit: the import completed first (above), then stopped",
                crate::interrupt::signal_name(signal)
            ),
        }
        .into());
    }
    Ok(if ok { Outcome::Good } else { Outcome::Broken })
}

/// What a delta does, in a line.
fn delta_line(d: &crate::import::delta::DeltaOutcome) -> String {
    let added = match d.added.is_empty() {
        true => String::new(),
        false => format!(", {} added whole", d.added.join(", ")),
    };
    let records = match d.records {
        0 => String::new(),
        n => format!(", {} in metadata.db", render::count(n, "record", "records")),
    };
    format!(
        "a delta onto round {} ({}): {} written whole, {} patched, {} deleted, {}{added}{records}, {} of data; its volumes hold round {}",
        d.base,
        d.volumes.join(", "),
        render::count(d.written, "entry", "entries"),
        render::count(d.patched, "file", "files"),
        d.deleted,
        render::count(d.directories, "directory set", "directories set"),
        render::bytes(d.bytes),
        d.round
    )
}

fn bundle_line(report: &ImportReport) -> String {
    format!(
        "bundle from {}:{}: {}, {}, {} in {}",
        report.header.source_host,
        report.header.source_data_root,
        render::count(report.header.containers.len(), "container", "containers"),
        render::count(report.header.volumes.len(), "volume", "volumes"),
        render::bytes(report.trailer.bytes),
        render::count(report.trailer.files as usize, "file", "files"),
    )
}

fn dry_run_text(
    root: &DataRoot,
    report: &ImportReport,
    refusals: &[String],
    quiet: bool,
) -> String {
    let mut out = String::new();
    if quiet {
        for r in refusals {
            let _ = writeln!(out, "{r}");
        }
        return out;
    }
    let _ = writeln!(out, "{}", bundle_line(report));
    let _ = writeln!(
        out,
        "dry run: every digest checked, nothing written to {}",
        root.path().display()
    );
    if let Some(d) = &report.delta {
        let _ = writeln!(out, "would apply {}", delta_line(d));
    }
    for v in &report.header.volumes {
        let size = report
            .trailer
            .volumes
            .get(&v.name)
            .map(|s| {
                format!(
                    "{}, {}",
                    render::count(s.files as usize, "file", "files"),
                    render::bytes(s.bytes)
                )
            })
            .unwrap_or_default();
        let action = match report
            .conflicts
            .iter()
            .find(|c| c.volume() == Some(&v.name))
        {
            None => "create".to_string(),
            Some(c) => match c.identical {
                Some(true) => "exists, identical: kept".to_string(),
                Some(false) => "exists, DIFFERENT".to_string(),
                None => "exists".to_string(),
            },
        };
        let _ = writeln!(out, "  {action:24} {} ({size})", v.name);
        if let Some(d) = v.device.as_ref().filter(|d| d.data_carried) {
            let _ = writeln!(out, "  {:24}   its data goes to {}", "", d.device);
        }
    }
    let _ = writeln!(
        out,
        "free on {}: {} (needs {})",
        root.path().display(),
        render::bytes(report.free_bytes),
        render::bytes(report.needed_bytes)
    );
    for r in refusals {
        let _ = writeln!(out, "refused: {r}");
    }
    let _ = writeln!(
        out,
        "{}",
        if refusals.is_empty() {
            "the import would proceed"
        } else {
            "the import would be refused"
        }
    );
    out
}

fn import_text(
    root: &DataRoot,
    report: &ImportReport,
    verdicts: &[ContainerReport],
    quiet: bool,
) -> String {
    let mut out = String::new();
    let failing: Vec<&ContainerReport> = verdicts.iter().filter(|r| !r.ok).collect();
    if quiet {
        for p in &report.pending {
            let _ = writeln!(out, "error: {p}");
        }
        for w in &report.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        for r in &failing {
            for f in r.all_findings().filter(|f| f.severity.is_failure()) {
                let _ = writeln!(out, "{}: {}", r.name, f.message);
            }
        }
        return out;
    }
    super::recover::recovered_lines(&mut out, &report.recovered);
    let _ = writeln!(out, "{}", bundle_line(report));
    match &report.delta {
        Some(d) => {
            let _ = writeln!(
                out,
                "applied in {}: {}",
                root.volumes_dir().display(),
                delta_line(d)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "imported into {}: {} created, {} replaced, {} kept (identical)",
                root.volumes_dir().display(),
                report.create.len(),
                report.replaced.len(),
                report.skipped_identical.len()
            );
        }
    }
    for path in &report.bind_data {
        let _ = writeln!(out, "bind volume data laid down at {path}");
    }
    for cp in &report.checkpoints {
        let _ = writeln!(out, "checkpoint installed: {cp}");
    }
    for path in &report.rewritten_sources {
        let _ = writeln!(
            out,
            "volume Source paths pointed at this data-root in {path}"
        );
    }
    match report.metadata {
        Some(MetadataOutcome::Written(n)) => {
            let _ = writeln!(
                out,
                "metadata.db: {} (labels and options)",
                render::count(n, "record written", "records written")
            );
        }
        Some(MetadataOutcome::DaemonRunning) => {
            let _ = writeln!(
                out,
                "warning: dockerd is running on this data-root: the volumes are in place, but it will not see them until it restarts, and their labels are not recorded\n    fix: stop dockerd, re-run this import with --on-conflict skip-identical (it then writes only the labels), start dockerd"
            );
        }
        Some(MetadataOutcome::Registered { ok, ref failed }) => {
            let _ = writeln!(out, "dockerd is running: {} through the Engine API (labels and options recorded by the daemon)", render::count(ok, "volume registered", "volumes registered"));
            for (name, e) in failed {
                let _ = writeln!(out, "error: volume `{name}` is in place but not registered: {e}\n    fix: restart dockerd so its volume scan finds it (systemctl restart docker)");
            }
        }
        None => {}
    }
    for p in &report.pending {
        let _ = writeln!(out, "error: {p}");
    }
    if !report.bases.is_empty() {
        let _ = writeln!(
            out,
            "base for deltas recorded: {} in {}",
            render::count(report.bases.len(), "volume", "volumes"),
            root.bases_dir().display()
        );
    }
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    live_stale_sources(&mut out, root, report, verdicts);
    for name in &report.containers_from_bundle {
        let _ = writeln!(
            out,
            "note: container {name} is not on this data-root: verified with the bundle's config"
        );
    }
    for r in verdicts {
        let verdict = if r.ok { "starts" } else { "FAILS to start" };
        let _ = writeln!(out, "container {} {verdict}", r.name);
        for f in r.all_findings().filter(|f| f.severity <= Severity::Warning) {
            render::finding(&mut out, "  ", f);
        }
    }
    let _ = writeln!(
        out,
        "{}",
        if failing.is_empty() {
            "every mount point of the carried containers resolves".to_string()
        } else {
            format!(
                "{} of {} carried containers would fail to start",
                failing.len(),
                verdicts.len()
            )
        }
    );
    out
}

/// After a live import into a data-root at another path: the running
/// dockerd keeps the containers' old Sources in memory (import edits
/// configs only with the daemon stopped), so the containers with a z/Z
/// mount fail until it is stopped, their Sources rewritten, and started.
fn live_stale_sources(
    out: &mut String,
    root: &DataRoot,
    report: &ImportReport,
    verdicts: &[ContainerReport],
) {
    let live = matches!(
        report.metadata,
        Some(MetadataOutcome::Registered { .. } | MetadataOutcome::DaemonRunning)
    );
    let stale: Vec<&str> = verdicts
        .iter()
        .filter(|r| {
            r.all_findings().any(|f| {
                f.kind == crate::report::FindingKind::StaleSourceRelabel && f.severity.is_failure()
            })
        })
        .map(|r| r.name.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    if !live || stale.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "error: the running dockerd keeps the old volume Sources of {} in memory: they fail to start until it is restarted with their Sources rewritten\n    fix: systemctl stop docker && {} && systemctl start docker",
        stale.join(", "),
        verify::rewrite_command(root, &stale)
    );
}
