//! `volmig verify`: predict `docker start` for each container.

use std::fmt::Write;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use super::daemon::{DaemonContext, Prediction, VersionSource};
use super::{emit, emit_json, render, Cli, Outcome};
use crate::dataroot::containers::{self, ContainerSlot};
use crate::dataroot::mountinfo::MountTable;
use crate::dataroot::DataRoot;
use crate::report::{Finding, Severity};
use crate::scan;
use crate::verify::{self, ContainerReport, MountStatus, VerifyOptions, World};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Containers to check: full ID, unique ID prefix, or name (with or
    /// without the leading `/`).
    #[arg(value_name = "CONTAINER", required_unless_present = "all")]
    pub containers: Vec<String>,

    /// Check every container of the data-root.
    #[arg(long, conflicts_with = "containers")]
    pub all: bool,

    /// Predict `docker start --checkpoint NAME` (checked after the mounts).
    #[arg(long, value_name = "NAME")]
    pub checkpoint: Option<String>,

    /// The daemon runs with --experimental (checkpoints need it).
    #[arg(long)]
    pub experimental: bool,
}

#[derive(Serialize)]
struct VerifyDocument<'a> {
    ok: bool,
    data_root: String,
    daemon_version: String,
    daemon_version_source: VersionSource,
    /// Which daemon, binary or flag gave the version, and what it means.
    prediction: Prediction,
    /// Daemon-level problems from the scan (fatal ones stop every container).
    daemon: Vec<&'a Finding>,
    containers: &'a [ContainerReport],
    summary: Summary,
}

#[derive(Serialize)]
struct Summary {
    containers: usize,
    failing_containers: usize,
    failing_mounts: usize,
    warnings: usize,
}

pub fn run(cli: &Cli, args: &VerifyArgs) -> anyhow::Result<Outcome> {
    let root = super::open_root(cli, false)?;
    let daemon = DaemonContext::probe(cli, &root);
    let version = daemon.version;
    let (mounts, scan, slots) = read_world(&root, version)?;
    let selected = select(&slots, &args.containers, args.all, &root)?;
    let world = World {
        root: &root,
        scan: &scan,
        mounts: &mounts,
        containers: &slots,
    };
    let opts = VerifyOptions {
        version,
        checkpoint: args.checkpoint.clone(),
        experimental: args.experimental,
        daemon_running: daemon.running(),
    };
    let series = daemon.request.as_ref().is_some_and(|r| r.is_series());
    let reports: Vec<ContainerReport> = selected
        .iter()
        .map(|slot| {
            let mut report = verify::verify_container(&world, slot, &opts);
            if series {
                report.within_series = verify::verdict_across_series(&world, slot, &opts);
            }
            report
        })
        .collect();
    let daemon_findings: Vec<&Finding> = scan
        .findings
        .iter()
        .filter(|f| f.severity <= Severity::Warning)
        .collect();
    let summary = Summary {
        containers: reports.len(),
        failing_containers: reports.iter().filter(|r| !r.ok).count(),
        failing_mounts: reports
            .iter()
            .flat_map(|r| &r.mounts)
            .filter(|m| m.status == MountStatus::Error)
            .count(),
        warnings: reports
            .iter()
            .flat_map(|r| r.all_findings())
            .filter(|f| f.severity == Severity::Warning)
            .count(),
    };
    let ok = summary.failing_containers == 0 && !scan.broken();
    if cli.json {
        emit_json(&VerifyDocument {
            ok,
            data_root: root.path().display().to_string(),
            daemon_version: version.to_string(),
            daemon_version_source: daemon.source,
            prediction: daemon.prediction(),
            daemon: daemon_findings,
            containers: &reports,
            summary,
        })?;
    } else {
        emit(&text(
            &root,
            &daemon_findings,
            &reports,
            &summary,
            &daemon.describe(),
            cli.quiet,
            ok,
        ))?;
    }
    Ok(if ok { Outcome::Good } else { Outcome::Broken })
}

/// Reads what a prediction needs: the mount table, the volume scan and
/// every container. The scan and the containers are independent: they are
/// read side by side.
pub(super) fn read_world(
    root: &DataRoot,
    version: crate::daemon_version::DaemonVersion,
) -> anyhow::Result<(MountTable, scan::Scan, Vec<ContainerSlot>)> {
    let mounts = MountTable::read_self().context("cannot read /proc/self/mountinfo")?;
    let (slots, scan) = std::thread::scope(|s| {
        let scan = s.spawn(|| scan::scan(root, &mounts, version));
        let slots = containers::load_all(root);
        (slots, scan.join())
    });
    let scan = scan.map_err(|_| anyhow::anyhow!("the volume scan failed unexpectedly"))?;
    let slots =
        slots.with_context(|| format!("cannot read `{}`", root.containers_dir().display()))?;
    Ok((mounts, scan, slots))
}

/// Resolves the arguments to containers; every unknown one is reported
/// before anything is checked.
pub(super) fn select<'a>(
    slots: &'a [ContainerSlot],
    queries: &[String],
    all: bool,
    root: &DataRoot,
) -> anyhow::Result<Vec<&'a ContainerSlot>> {
    if all {
        return Ok(slots.iter().collect());
    }
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for query in queries {
        match containers::find(slots, query) {
            Ok(slot) => {
                if !found.iter().any(|s: &&ContainerSlot| s.id == slot.id) {
                    found.push(slot);
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        let mut known: Vec<&str> = slots.iter().filter_map(|s| s.name()).collect();
        let more = known.len().saturating_sub(10);
        known.truncate(10);
        let hint = if known.is_empty() {
            let mut hint = format!("`{}` holds no containers", root.containers_dir().display());
            if let Some(r) = root.remap_subtrees().first() {
                let _ = write!(
                    hint,
                    "; it has a userns-remap subtree: add --userns-remap {r}"
                );
            }
            hint
        } else {
            format!(
                "containers here: {}{}",
                known.join(", "),
                if more > 0 {
                    format!(" and {more} more (volmig verify --all)")
                } else {
                    String::new()
                }
            )
        };
        bail!("{}\n({hint})", errors.join("\n"));
    }
    Ok(found)
}

fn short(id: &str) -> &str {
    crate::dataroot::containers::short_id(id)
}

fn text(
    root: &DataRoot,
    daemon: &[&Finding],
    reports: &[ContainerReport],
    summary: &Summary,
    predicting: &str,
    quiet: bool,
    ok: bool,
) -> String {
    let mut out = String::new();
    if quiet {
        for f in daemon.iter().filter(|f| f.severity.is_failure()) {
            let _ = writeln!(out, "daemon: {}", f.message);
        }
        for r in reports.iter().filter(|r| !r.ok) {
            let who = if r.name.is_empty() {
                short(&r.id)
            } else {
                &r.name
            };
            for f in r.findings.iter().filter(|f| f.severity.is_failure()) {
                let _ = writeln!(out, "{who}: {}", f.message);
            }
            for m in &r.mounts {
                for f in m.findings.iter().filter(|f| f.severity.is_failure()) {
                    let _ = writeln!(out, "{who}: {}: {}", m.destination, f.message);
                }
            }
        }
        return out;
    }
    let _ = writeln!(
        out,
        "data-root {} (predicting {predicting})",
        root.path().display()
    );
    for f in daemon {
        render::finding(&mut out, "", f);
    }
    for r in reports {
        let verdict = if r.ok { "starts" } else { "FAILS to start" };
        let name = if r.name.is_empty() {
            "(unloadable)"
        } else {
            &r.name
        };
        let _ = writeln!(out, "\ncontainer {name} {} {verdict}", short(&r.id));
        if let Some(series) = &r.within_series {
            let _ = writeln!(
                out,
                "  note: inside the series, {} (the rule that changes: {})",
                series.text,
                series.rules.join("; ")
            );
        }
        for f in &r.findings {
            render::finding(&mut out, "  ", f);
        }
        if r.mounts.is_empty() && r.findings.is_empty() {
            let _ = writeln!(out, "  no mount points");
        }
        for m in &r.mounts {
            let status = match m.status {
                MountStatus::Ok => "ok  ",
                MountStatus::Warning => "warn",
                MountStatus::Error => "FAIL",
                MountStatus::Skipped => "skip",
            };
            let what = match (m.kind.as_str(), m.name.is_empty()) {
                ("volume", false) => format!("volume {}", m.name),
                (kind, _) if !m.source.is_empty() => format!("{kind} {}", m.source),
                (kind, _) => kind.to_string(),
            };
            let ro = if m.rw { "" } else { " (ro)" };
            let _ = writeln!(out, "  {status} {} <- {what}{ro}", m.destination);
            for f in &m.findings {
                render::finding(&mut out, "       ", f);
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{}: {} fail to start, {}, {}{}",
        render::count(summary.containers, "container", "containers"),
        summary.failing_containers,
        render::count(
            summary.failing_mounts,
            "failing mount point",
            "failing mount points"
        ),
        render::count(summary.warnings, "warning", "warnings"),
        if ok {
            ""
        } else {
            " (dockerd reports only the first failure of each; all are listed here)"
        }
    );
    let changing: Vec<&str> = reports
        .iter()
        .filter(|r| r.within_series.is_some())
        .map(|r| {
            if r.name.is_empty() {
                short(&r.id)
            } else {
                r.name.as_str()
            }
        })
        .collect();
    if !changing.is_empty() {
        let _ = writeln!(
            out,
            "the verdict changes inside the series for {}: see the notes above, or give the exact release with --daemon-version",
            changing.join(", ")
        );
    }
    out
}
