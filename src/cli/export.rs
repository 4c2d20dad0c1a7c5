//! `volmig export`: containers' volumes into one bundle.

use std::fs::{self, File};
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use super::daemon::DaemonContext;
use super::progress::{Interruptible, TermProgress};
use super::{emit_json, render, Cli, Outcome};
use crate::bundle::writer::Compression;
use crate::dataroot::DataRoot;
use crate::engine::Quiesce;
use crate::export::{self, ExportOptions};
use crate::manifest::ManifestWriter;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressArg {
    Zstd,
}

/// `--bind-data`: what to do with a bind-type volume's host directory.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum BindDataArg {
    /// Carry the device path's tree as the volume's data (import lays it
    /// down at the device path, or where --map-path says).
    #[default]
    Carry,
    /// Carry only the volume's options: the data stays on this host.
    Skip,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Containers whose mount points and volumes to carry (ID, ID prefix or name).
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,

    /// Where to write the bundle; `-` for stdout (e.g. piped into ssh).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// Compress the bundle (import detects it by its magic number).
    #[arg(long, value_name = "ALGO")]
    pub compress: Option<CompressArg>,

    /// Also carry containers/<id>/checkpoints/NAME/ (for docker start --checkpoint).
    #[arg(long, value_name = "NAME")]
    pub checkpoint: Option<String>,

    /// Export containers that are running (their data may change while it
    /// is read). A file that changes while it is read fails the export,
    /// except in a pre-copy round (with --manifest-out or --since): it is
    /// then carried as read and marked in the manifest, so that the next
    /// round carries it again.
    #[arg(long)]
    pub allow_running: bool,

    /// Pause running containers through the Engine API for the export, and
    /// unpause them afterwards, whatever happens in between.
    #[arg(long, conflicts_with = "stop")]
    pub pause: bool,

    /// Stop running containers through the Engine API for the export, and
    /// start them again afterwards, whatever happens in between.
    #[arg(long)]
    pub stop: bool,

    /// A volume whose opts.json binds a host directory over `_data`
    /// (compose's `driver_opts: {type: none, o: bind, device: DIR}`) keeps
    /// its data in DIR: `carry` puts DIR's tree in the bundle as the
    /// volume's data, `skip` leaves it behind (and says so). Network,
    /// tmpfs and block-device volumes carry their options and `_data` as
    /// it is on disk, never the device's data (export says so).
    #[arg(long, value_enum, value_name = "WHAT", default_value_t = BindDataArg::Carry)]
    pub bind_data: BindDataArg,

    /// Also write a manifest of what the bundle carries to FILE: per
    /// entry of each volume its stat and content digest, per large file
    /// the digests of its 256 KiB chunks (zstd-compressed JSON lines). A
    /// later `export --since FILE` carries only what changed since, and
    /// the import of this bundle records it as the base for such deltas.
    #[arg(long, value_name = "FILE")]
    pub manifest_out: Option<PathBuf>,

    /// Write a delta onto the round whose manifest is FILE (from that
    /// round's --manifest-out): only entries new or changed since (by
    /// size, mtime, ctime, inode, mode and owner), deletions, and for a
    /// changed file of more than 256 KiB only its changed 256 KiB chunks.
    /// `volmig import` applies it onto a target that holds that round.
    #[arg(long, value_name = "FILE")]
    pub since: Option<PathBuf>,

    /// With --since: read and compare every file instead of trusting an
    /// unchanged stat (slower; for sources whose clocks or inode numbers
    /// cannot be trusted).
    #[arg(long, requires = "since")]
    pub checksum: bool,
}

pub fn run(cli: &Cli, args: &ExportArgs) -> anyhow::Result<Outcome> {
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        bail!("refusing to write a bundle to a terminal: pass -o FILE, or pipe it (volmig export ... -o - | ssh host volmig import -)");
    }
    if to_stdout && cli.json {
        bail!("--json prints on stdout, where -o - writes the bundle: pass -o FILE with --json");
    }
    let root = super::open_root(cli, true)?;
    let opts = ExportOptions {
        containers: args.containers.clone(),
        checkpoint: args.checkpoint.clone(),
        allow_running: args.allow_running,
        paused_is_quiet: args.pause,
        bind_data: match args.bind_data {
            BindDataArg::Carry => export::BindData::Carry,
            BindDataArg::Skip => export::BindData::Skip,
        },
    };
    let daemon = if args.pause || args.stop {
        DaemonContext::require(cli, &root, if args.pause { "--pause" } else { "--stop" })?.engine
    } else {
        DaemonContext::serving(cli, &root)
    };
    let engine = daemon.as_ref().map(|e| e as &dyn crate::engine::Engine);
    if args.pause || args.stop {
        // Containers must be put back whatever happens: Ctrl-C now stops
        // the export between entries instead of killing volmig.
        super::signals::poll(
            "stopping at the next entry and putting the containers back",
            "containers paused or stopped for the export are left so; check `docker ps -a`",
        );
    } else {
        super::signals::poll(
            "stopping at the next entry and removing the partial bundle",
            "a partial bundle may be left beside the output",
        );
    }
    // Quiesced containers are put back by `restore` below, and by the
    // guard's drop on a panic or an early return.
    let mut quiesce = engine.filter(|_| args.pause || args.stop).map(Quiesce::new);
    if let Some(q) = quiesce.as_mut() {
        let slots =
            crate::dataroot::containers::load_all(&root).context("cannot read the containers")?;
        for query in &args.containers {
            let slot = crate::dataroot::containers::find(&slots, query)?;
            q.quiet(&slot.id, args.pause)?;
        }
    }
    let produced = produce(cli, args, &root, &opts, engine, to_stdout);
    let restored = quiesce.as_mut().map_or(Ok(()), |q| q.restore());
    let (plan, report, written_to) = match (produced, restored) {
        (Ok(done), Ok(())) => done,
        (Ok(_), Err(e)) => return Err(e.into()),
        (Err(e), Ok(())) => return Err(e),
        (Err(e), Err(r)) => return Err(e.context(r.to_string())),
    };
    if let Some(signal) = crate::interrupt::requested() {
        return Err(super::Interrupted {
            signal,
            message:
                "the export stopped; containers paused or stopped for it were put back as they were"
                    .into(),
        }
        .into());
    }
    let t = &report.trailer;
    if cli.json {
        emit_json(&super::output::ExportDoc {
            ok: true,
            output: &args.output,
            containers: plan
                .header
                .containers
                .iter()
                .map(|c| c.name.as_str())
                .collect(),
            volumes: &t.volumes,
            entries: t.entries,
            files: t.files,
            bytes: t.bytes,
            skipped: &report.skipped,
            changed_while_read: &report.changed_while_read,
            data_not_carried: plan.data_left_behind(),
        })?;
    } else if !cli.quiet {
        for s in &report.skipped {
            eprintln!("note: not carried: {s}");
        }
        for s in plan.data_left_behind() {
            eprintln!("note: data not carried: {s}");
        }
        if !report.changed_while_read.is_empty() {
            eprintln!(
                "note: {} changed while read (the containers run): carried as read, and again by the next round (--since)",
                render::count(report.changed_while_read.len(), "file", "files")
            );
        }
        eprintln!(
            "exported {}, {} ({} in {}) to {written_to}",
            render::count(plan.header.containers.len(), "container", "containers"),
            render::count(t.volumes.len(), "volume", "volumes"),
            render::bytes(t.bytes),
            render::count(t.files as usize, "file", "files"),
        );
    }
    Ok(Outcome::Good)
}

/// Plans and writes the bundle; returns the plan, the report and where it
/// went.
fn produce(
    cli: &Cli,
    args: &ExportArgs,
    root: &DataRoot,
    opts: &ExportOptions,
    engine: Option<&dyn crate::engine::Engine>,
    to_stdout: bool,
) -> anyhow::Result<(export::ExportPlan, export::ExportReport, String)> {
    let mut plan = export::plan(root, opts, engine)?;
    let since = match &args.since {
        Some(path) => Some(crate::bundle::since::Base::new(
            crate::manifest::ManifestReader::open(path)?,
            args.checksum,
        )),
        None => None,
    };
    if since.is_some() || args.manifest_out.is_some() {
        let header = &mut plan.header;
        header.round = Some(crate::bundle::Round {
            id: crate::manifest::new_round_id(&header.source_host, &header.source_data_root),
            base: since.as_ref().map(|b| b.id().to_string()),
        });
    }
    let (manifest, manifest_partial) = match &args.manifest_out {
        Some(path) => {
            let (writer, partial) = start_manifest(path, root, &plan)?;
            (Some(writer), Some(partial))
        }
        None => (None, None),
    };
    // A pre-copy round of running containers: what changes while read
    // goes again next round, rather than fail this one.
    let tolerant = args.allow_running && (args.manifest_out.is_some() || args.since.is_some());
    let mut round = Some(export::RoundOutput {
        manifest,
        since,
        tolerant,
    });
    let show = !cli.quiet && std::io::stderr().is_terminal();
    let total = show.then(|| plan.content_bytes(root));
    let progress: Box<dyn crate::progress::Progress> =
        Box::new(Interruptible(TermProgress::boxed(cli.quiet, total)));
    let compression = match args.compress {
        Some(CompressArg::Zstd) => Compression::Zstd,
        None => Compression::None,
    };
    let (report, written_to) = if to_stdout {
        let out = File::from(
            std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .context("cannot use stdout")?,
        );
        let (report, _) = export::write(
            root,
            &plan,
            out,
            compression,
            round.take().unwrap_or_default(),
            progress.as_ref(),
        )?;
        (report, "stdout".to_string())
    } else if fs::metadata(&args.output).is_ok_and(|m| !m.is_file()) {
        // A device or fifo (/dev/null, a named pipe): written in place.
        // Renaming a finished file over it would replace the device itself.
        let out = File::options()
            .write(true)
            .open(&args.output)
            .with_context(|| format!("cannot open `{}`", args.output.display()))?;
        let (report, _) = export::write(
            root,
            &plan,
            out,
            compression,
            round.take().unwrap_or_default(),
            progress.as_ref(),
        )?;
        (report, format!("`{}`", args.output.display()))
    } else {
        // Written beside the target and renamed at the end: no half bundle
        // ever carries the final name.
        let partial = partial_path(&args.output);
        let out = File::create(&partial)
            .with_context(|| format!("cannot create `{}`", partial.display()))?;
        match export::write(
            root,
            &plan,
            out,
            compression,
            round.take().unwrap_or_default(),
            progress.as_ref(),
        ) {
            Ok((report, file)) => {
                file.sync_all()
                    .with_context(|| format!("cannot sync `{}`", partial.display()))?;
                fs::rename(&partial, &args.output)
                    .with_context(|| format!("cannot rename to `{}`", args.output.display()))?;
                (report, format!("`{}`", args.output.display()))
            }
            Err(e) => {
                let _ = fs::remove_file(&partial);
                if let Some(m) = &manifest_partial {
                    let _ = fs::remove_file(m);
                }
                return Err(e.into());
            }
        }
    };
    drop(progress);
    if let (Some(partial), Some(path)) = (&manifest_partial, &args.manifest_out) {
        fs::rename(partial, path)
            .with_context(|| format!("cannot rename to `{}`", path.display()))?;
    }
    Ok((plan, report, written_to))
}

/// Starts the manifest of the plan's round beside `path` (renamed to
/// `path` once the bundle is whole).
fn start_manifest(
    path: &std::path::Path,
    root: &DataRoot,
    plan: &export::ExportPlan,
) -> anyhow::Result<(ManifestWriter, PathBuf)> {
    let header = &plan.header;
    let id = header
        .round
        .as_ref()
        .map(|r| r.id.clone())
        .unwrap_or_default();
    let partial = partial_path(path);
    let writer = ManifestWriter::create(
        &partial,
        &crate::manifest::ManifestHeader {
            format: crate::manifest::FORMAT.into(),
            chunk_size: crate::manifest::CHUNK,
            bundle: id,
            side: "source".into(),
            host: header.source_host.clone(),
            data_root: root.given().display().to_string(),
            record: None,
        },
    )?;
    Ok((writer, partial))
}

fn partial_path(output: &std::path::Path) -> PathBuf {
    let mut name = output
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    output.with_file_name(name)
}
