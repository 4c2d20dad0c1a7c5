//! `volmig inspect`: what a bundle holds; `--check` re-hashes everything.

use std::fmt::Write as _;
use std::io::Read;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::import::open_input;
use super::progress::TermProgress;
use super::{emit, emit_json, render, Cli, Outcome};
use crate::bundle::reader::{self, Check, ReadError, Visitor};
use crate::bundle::{BundleHeader, EntryMeta, Place, Trailer};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundle; `-` for stdin.
    #[arg(value_name = "FILE")]
    pub input: PathBuf,

    /// Re-hash every file and check every digest; exit 1 on any mismatch.
    #[arg(long)]
    pub check: bool,
}

/// Reads entries and keeps nothing.
struct Discard;

impl Visitor for Discard {
    fn header(&mut self, _: &BundleHeader) -> Result<(), ReadError> {
        Ok(())
    }
    fn entry(
        &mut self,
        _: &BundleHeader,
        _: &EntryMeta,
        _: Place<'_>,
        _: &mut dyn Read,
    ) -> Result<(), ReadError> {
        Ok(())
    }
}

pub fn run(cli: &Cli, args: &InspectArgs) -> anyhow::Result<Outcome> {
    let (input, size) = open_input(&args.input)?;
    let input = reader::open(input)?;
    let progress = TermProgress::boxed(cli.quiet, size);
    let check = if args.check {
        Check::Content
    } else {
        Check::Structure
    };
    let result = reader::read(input, &mut Discard, progress.as_ref(), check);
    drop(progress);
    let (header, trailer) = match result {
        Ok(ok) => ok,
        // A bundle that does not match its digests is "broken" (exit 1)
        // when checking is what was asked.
        Err(e @ (ReadError::Corrupt(_) | ReadError::Truncated(_) | ReadError::Hostile { .. }))
            if args.check =>
        {
            if cli.json {
                emit_json(&json!({"ok": false, "error": e.to_string()}))?;
            } else {
                emit(&format!("check FAILED: {e}\n"))?;
            }
            return Ok(Outcome::Broken);
        }
        Err(e) => return Err(e.into()),
    };
    if cli.json {
        emit_json(&json!({
            "ok": true,
            "checked": args.check,
            "header": header,
            "trailer": trailer,
        }))?;
    } else if !cli.quiet {
        emit(&text(&header, &trailer, args.check))?;
    }
    Ok(Outcome::Good)
}

fn text(header: &BundleHeader, trailer: &Trailer, checked: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} written by {} on {} from {}",
        header.format, header.tool, header.source_host, header.source_data_root
    );
    for c in &header.containers {
        let cp = c
            .checkpoint
            .as_ref()
            .map(|c| format!(" (checkpoint {c})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "container {} {}{cp}",
            c.name,
            crate::dataroot::containers::short_id(&c.id)
        );
        for m in &c.mounts {
            let what = if m.kind == "volume" {
                format!("volume {}", m.name)
            } else {
                format!("{} {}", m.kind, m.source)
            };
            let _ = writeln!(
                out,
                "  {} <- {what}{}",
                m.destination,
                if m.rw { "" } else { " (ro)" }
            );
        }
    }
    if let Some(u) = &header.userns {
        let _ = writeln!(
            out,
            "ids: as the containers see them (exported from userns-remap root {}; {})",
            u.remap_root, u.origin
        );
    }
    for v in &header.volumes {
        let s = trailer.volumes.get(&v.name);
        let size = s
            .map(|s| {
                format!(
                    "{}, {}",
                    render::count(s.files as usize, "file", "files"),
                    render::bytes(s.bytes)
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "volume {} ({size}) _data {}:{} {}",
            v.name, v.data.uid, v.data.gid, v.data.mode
        );
        if let Some(d) = &v.device {
            let carried = match (d.data_carried, d.location.as_str()) {
                (true, _) => "its data is in the bundle, laid down at that path on import",
                (false, "bind") => "its data was left behind (--bind-data skip)",
                (false, _) => "its data is not in the bundle",
            };
            let _ = writeln!(
                out,
                "  data location: {} `{}`: {carried}",
                d.location, d.device
            );
        }
        if let Some(r) = &v.record {
            let labels: Vec<String> = r
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !labels.is_empty() {
                let _ = writeln!(out, "  labels: {}", labels.join(", "));
            }
            let opts: Vec<String> = r
                .options
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if !opts.is_empty() {
                let _ = writeln!(out, "  options: {}", opts.join(", "));
            }
        }
    }
    let _ = writeln!(
        out,
        "{} entries, {} in {}; {}",
        trailer.entries,
        render::bytes(trailer.bytes),
        render::count(trailer.files as usize, "file", "files"),
        if checked {
            "every digest checked: OK"
        } else {
            "digests not checked (pass --check)"
        }
    );
    out
}
