//! `volmig scan`: the volumes dockerd would load, and every problem.

use std::fmt::Write;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::daemon::{DaemonContext, Prediction, VersionSource};
use super::{emit, emit_json, render, Cli, Outcome};
use crate::dataroot::mountinfo::MountTable;
use crate::report::Severity;
use crate::scan::{self, Scan};

#[derive(Debug, Args)]
pub struct ScanArgs {}

#[derive(Serialize)]
struct ScanDocument<'a> {
    ok: bool,
    /// Where `daemon_version` came from: flag, daemon, installed or default.
    daemon_version_source: VersionSource,
    /// Which daemon, binary or flag gave the version, and what it means.
    prediction: Prediction,
    #[serde(flatten)]
    scan: &'a Scan,
}

pub fn run(cli: &Cli, _args: &ScanArgs) -> anyhow::Result<Outcome> {
    let root = super::open_root(cli, false)?;
    let mounts = MountTable::read_self().context("cannot read /proc/self/mountinfo")?;
    let daemon = DaemonContext::probe(cli, &root);
    let scan = scan::scan(&root, &mounts, daemon.version);
    let ok = !scan.broken();
    if cli.json {
        emit_json(&ScanDocument {
            ok,
            daemon_version_source: daemon.source,
            prediction: daemon.prediction(),
            scan: &scan,
        })?;
    } else {
        emit(&text(&scan, &daemon.describe(), cli.quiet))?;
    }
    Ok(if ok { Outcome::Good } else { Outcome::Broken })
}

fn text(scan: &Scan, predicting: &str, quiet: bool) -> String {
    let mut out = String::new();
    let fatal = scan
        .all_findings()
        .filter(|f| f.severity == Severity::Fatal)
        .count();
    if quiet {
        for f in scan
            .all_findings()
            .filter(|f| f.severity == Severity::Fatal)
        {
            let _ = writeln!(out, "{}", f.message);
        }
        return out;
    }
    let _ = writeln!(
        out,
        "data-root {} (predicting {predicting})",
        scan.data_root.display()
    );
    let _ = writeln!(
        out,
        "{} dockerd would load:",
        render::count(scan.volumes.len(), "volume", "volumes")
    );
    let width = scan
        .volumes
        .keys()
        .map(|n| n.len().min(64))
        .max()
        .unwrap_or(0);
    for v in scan.volumes.values() {
        let data = match v.data {
            Some(d) => format!("_data {}:{} {:04o}", d.uid, d.gid, d.mode),
            None => "no _data".into(),
        };
        let mut line = format!("  {:width$}  {}  {data}", v.name, v.driver);
        if let Some(o) = v.options.as_ref().filter(|o| !o.is_plain()) {
            let mut parts = Vec::new();
            for (key, value) in [
                ("type", &o.mount_type),
                ("device", &o.mount_device),
                ("o", &o.mount_opts),
            ] {
                if !value.is_empty() {
                    parts.push(format!("{key}={value}"));
                }
            }
            if o.quota.size > 0 {
                parts.push(format!("size={}", o.quota.size));
            }
            let _ = write!(line, "  opts: {}", parts.join(" "));
        }
        if v.data_location.is_elsewhere() {
            let _ = write!(line, "  data: {}", v.data_location.describe());
        }
        match &v.labels {
            Some(labels) if !labels.is_empty() => {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = write!(line, "  labels: {}", labels.join(", "));
            }
            Some(_) => {}
            None => line.push_str("  (no metadata.db record)"),
        }
        let _ = writeln!(out, "{line}");
    }
    let findings: Vec<_> = scan.all_findings().collect();
    if !findings.is_empty() {
        let _ = writeln!(out, "problems:");
        let mut sorted = findings.clone();
        sorted.sort_by_key(|f| f.severity);
        for f in sorted {
            render::finding(&mut out, "  ", f);
        }
    }
    let warnings = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    let verdict = if fatal > 0 {
        format!(
            "dockerd will NOT start ({})",
            render::count(fatal, "fatal problem", "fatal problems")
        )
    } else {
        "dockerd will start".to_string()
    };
    let _ = writeln!(
        out,
        "{verdict}; {}",
        render::count(warnings, "warning", "warnings")
    );
    out
}
