//! `volmig inspect`: what a bundle holds; `--check` re-hashes everything;
//! `--manifest FILE` also writes the manifest of a full bundle.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;

use super::import::open_input;
use super::progress::{Interruptible, TermProgress};
use super::{emit, emit_json, render, Cli, Outcome};
use crate::bundle::reader::{self, Check, ReadError, Visitor};
use crate::bundle::{BundleHeader, EntryMeta, Place, Trailer};
use crate::manifest::from_bundle::{self, partial_path, Recovered};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundle; `-` for stdin.
    #[arg(value_name = "FILE")]
    pub input: PathBuf,

    /// Re-hash every file and check every digest; exit 1 on any mismatch.
    #[arg(long)]
    pub check: bool,

    /// Recover the manifest of a full bundle into FILE, for a later
    /// `export --since FILE` when the `--manifest-out` file of its export
    /// was lost: per volume, every `_data` entry with its attributes and
    /// content digest (and chunk digests for files over 256 KiB), computed
    /// from the bundle's bytes. Implies --check: FILE appears only once
    /// every digest and the volumes' tree digests matched the trailer
    /// (it is written as FILE.partial until then, removed on failure).
    /// A bundle does not carry the source's ctime and inode numbers, so
    /// the manifest has none and its entries always count as changed: an
    /// `export --since FILE` re-hashes every file to find what changed
    /// instead of trusting an unchanged stat. Refused (exit 2) for a
    /// bundle without a round id (exported without --manifest-out: no
    /// delta could name it as its base) and for a delta bundle.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
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
    if let Some(path) = &args.manifest {
        return run_manifest(cli, args, path);
    }
    let (input, size) = open_input(&args.input)?;
    let (input, progress) = TermProgress::reading(cli.quiet, input, size);
    progress.begin("reading", size);
    let input = reader::open(input)?;
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
                emit_json(&super::output::CheckFailedDoc {
                    ok: false,
                    checked: true,
                    error: e.to_string(),
                })?;
            } else {
                emit(&format!("check FAILED: {e}\n"))?;
            }
            return Ok(Outcome::Broken);
        }
        Err(e) => return Err(e.into()),
    };
    if cli.json {
        emit_json(&super::output::InspectDoc {
            ok: true,
            checked: args.check,
            header: &header,
            trailer: &trailer,
        })?;
    } else if !cli.quiet {
        emit(&text(&header, &trailer, args.check))?;
    }
    Ok(Outcome::Good)
}

/// `inspect --manifest FILE`: the bundle checked as by `--check`, and its
/// manifest written to FILE.
fn run_manifest(cli: &Cli, args: &InspectArgs, path: &Path) -> anyhow::Result<Outcome> {
    refuse_overwriting_input(&args.input, path)?;
    super::signals::poll(
        "stopping at the next entry and removing the partial manifest",
        "a partial manifest (FILE.partial) may be left beside FILE",
    );
    let (input, size) = open_input(&args.input)?;
    let (input, progress) = TermProgress::reading(cli.quiet, input, size);
    progress.begin("reading", size);
    let progress = Interruptible(progress);
    let input = reader::open(input)?;
    let result = from_bundle::write_manifest(input, path, &progress);
    drop(progress);
    let recovered = match result {
        Ok(r) => r,
        // Broken as `--check` says it: exit 1, the same words.
        Err(e) if e.bundle_is_broken() => {
            if cli.json {
                emit_json(&super::output::CheckFailedDoc {
                    ok: false,
                    checked: true,
                    error: e.to_string(),
                })?;
            } else {
                emit(&format!("check FAILED: {e}\n"))?;
            }
            return Ok(Outcome::Broken);
        }
        Err(e) => return Err(e.into()),
    };
    if cli.json {
        emit_json(&super::output::InspectManifestDoc {
            ok: true,
            checked: true,
            header: &recovered.header,
            trailer: &recovered.trailer,
            manifest: path,
            round: &recovered.round,
            trees_checked: recovered.trees_checked,
            volumes: &recovered.volumes,
        })?;
    } else if !cli.quiet {
        let mut out = text(&recovered.header, &recovered.trailer, true);
        out.push_str(&manifest_text(&recovered, path));
        emit(&out)?;
    }
    Ok(Outcome::Good)
}

/// The manifest's file (or its partial file) must not be the bundle
/// being read: the partial is truncated at the start, the rename would
/// replace the bundle at the end.
fn refuse_overwriting_input(input: &Path, manifest: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let input = if input.as_os_str() == "-" {
        Path::new("/dev/stdin")
    } else {
        input
    };
    let Ok(bundle) = std::fs::metadata(input) else {
        // Opening it says why.
        return Ok(());
    };
    for target in [manifest.to_path_buf(), partial_path(manifest)] {
        if let Ok(m) = std::fs::metadata(&target) {
            if (m.dev(), m.ino()) == (bundle.dev(), bundle.ino()) {
                anyhow::bail!(
                    "`{}` is the bundle being read: name another file for --manifest",
                    target.display()
                );
            }
        }
    }
    Ok(())
}

fn manifest_text(r: &Recovered, path: &Path) -> String {
    let mut out = String::new();
    let entries: u64 = r.volumes.iter().map(|v| v.entries).sum();
    let _ = writeln!(
        out,
        "manifest of round {} written to `{}`: {}, {} (without ctime or inode: a later `export --since` re-hashes every file)",
        r.round,
        path.display(),
        render::count(r.volumes.len(), "volume", "volumes"),
        render::count(entries as usize, "entry", "entries"),
    );
    for v in &r.volumes {
        let _ = writeln!(
            out,
            "  volume {}: {}, tree {}",
            v.name,
            render::count(v.entries as usize, "entry", "entries"),
            v.tree
        );
    }
    let _ = writeln!(
        out,
        "{}",
        if r.trees_checked {
            "tree digests checked against the trailer: OK"
        } else {
            "the trailer has no tree digests: not checked"
        }
    );
    out
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
