//! `import`: recreate a bundle's volumes under a target data-root, staged
//! and all-or-nothing, then re-run the scan and verify the carried
//! containers.
//!
//! Everything is written under `<data-root>/volmig-staging/<id>/` (same
//! filesystem, so committing a volume is one rename) and NEVER under
//! `<data-root>/volumes/`, where dockerd would take any directory for a
//! volume. Only a bundle whose every digest and trailer matched is
//! committed; a failure during commit renames back what was moved.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::bundle::reader::{self, ReadError, Visitor};
use crate::bundle::writer::{BundleWriter, Compression};
use crate::bundle::{BundleHeader, EntryKind, EntryMeta, Place, Trailer};
use crate::dataroot::containers::{self, ContainerSlot};
use crate::dataroot::metadata::{self, MetadataError, VolumeRecord};
use crate::dataroot::opts::VolumeOptions;
use crate::dataroot::DataRoot;
use crate::engine::Engine;
use crate::fileattrs::{self, FileAttrs, FileKind};
use crate::progress::{NoProgress, Progress};

/// What to do when a bundle volume already exists on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// List every conflict and write nothing.
    Fail,
    /// Keep a target volume whose content digest equals the bundle's.
    SkipIdentical,
    /// Keep the old volume aside until the import committed, then remove it.
    Replace,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Bundle(#[from] ReadError),
    /// Refused before anything was written; one reason per line.
    #[error("{}", .0.join("\n"))]
    Refused(Vec<String>),
    #[error("cannot write `{path}`: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("commit failed at `{path}`: {source}; everything was rolled back and the target is as it was")]
    Commit { path: PathBuf, source: io::Error },
}

fn werr(path: &Path) -> impl FnOnce(io::Error) -> ImportError + '_ {
    move |source| ImportError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// A bundle volume that exists on the target.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub volume: String,
    /// Whether the target's content digest equals the bundle's
    /// (computed for `skip-identical` only).
    pub identical: Option<bool>,
}

/// How the metadata.db records went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataOutcome {
    Written(usize),
    /// dockerd holds the database and no Engine API was given: nothing
    /// written, and the daemon does not know the new volumes.
    DaemonRunning,
    /// dockerd runs: each volume was registered through the Engine API
    /// (names that failed, with the daemon's reason).
    Registered {
        ok: usize,
        failed: Vec<(String, String)>,
    },
}

/// The plan of `--dry-run`, and the result of a real import.
#[derive(Debug)]
pub struct ImportReport {
    pub header: BundleHeader,
    pub trailer: Trailer,
    pub create: Vec<String>,
    pub conflicts: Vec<Conflict>,
    pub replaced: Vec<String>,
    pub skipped_identical: Vec<String>,
    /// Checkpoints installed into existing target containers.
    pub checkpoints: Vec<String>,
    /// `config.v2.json` files whose stale volume Source paths were rewritten.
    pub rewritten_sources: Vec<String>,
    pub metadata: Option<MetadataOutcome>,
    /// Free bytes on the target filesystem (before the import).
    pub free_bytes: u64,
    /// Bytes the files take once written: holes of sparse files excluded
    /// (a 100 GiB sparse disk image with 1 MiB of data needs 1 MiB).
    pub needed_bytes: u64,
    pub dry_run: bool,
    /// Containers whose configs were verified from the bundle because the
    /// target holds no such container.
    pub containers_from_bundle: Vec<String>,
    /// Slots to verify: the target's container when present, else the
    /// bundle's config (kept in a temporary directory).
    pub verify_slots: Vec<ContainerSlot>,
    _bundle_configs: Option<tempfile::TempDir>,
    tops: BTreeMap<String, VolumeTop>,
}

/// Imports `input` into `root` (see the module doc). `engine` is the
/// daemon serving `root` if one runs: the volumes are then registered
/// through it, since its volume scan ran at its start.
pub fn import(
    root: &DataRoot,
    input: Box<dyn Read>,
    policy: OnConflict,
    dry_run: bool,
    engine: Option<&dyn Engine>,
    progress: &dyn Progress,
) -> Result<ImportReport, ImportError> {
    let volumes_dir = root.volumes_dir();
    let free_bytes = nix::sys::statvfs::statvfs(root.path())
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0);
    let input = reader::open(input)?;
    let staging_root = root.path().join("volmig-staging");
    let mut stage = Stager {
        root,
        policy,
        dry_run,
        staging_root: staging_root.clone(),
        dir: None,
        conflicts: Vec::new(),
        dirs: Vec::new(),
        data_bytes: 0,
        tops: BTreeMap::new(),
    };
    let result = reader::read(input, &mut stage, progress, reader::Check::Content);
    let (header, trailer) = match result {
        Ok(ok) => ok,
        Err(e) => {
            stage.discard();
            return Err(e.into());
        }
    };
    if let Err(e) = stage.close_dirs(&[]) {
        stage.discard();
        return Err(e.into());
    }
    if let Some(dir) = &stage.dir {
        let missing: Vec<String> = header
            .volumes
            .iter()
            .filter(|v| !dir.join("volumes").join(&v.name).join("_data").is_dir())
            .map(|v| {
                format!(
                    "volume `{}` is described by the header but not carried in the bundle",
                    v.name
                )
            })
            .collect();
        if !missing.is_empty() {
            stage.discard();
            return Err(ReadError::Corrupt(missing.join("; ")).into());
        }
    }

    // Conflicts: identical or not, decided now that the bundle is verified.
    let mut refusals = Vec::new();
    let mut conflicts = stage.conflicts.clone();
    for c in &mut conflicts {
        if policy == OnConflict::SkipIdentical {
            let theirs = trailer.volumes.get(&c.volume).map(|s| s.digest.clone());
            let ours = volume_digest(root, &c.volume)?;
            c.identical = Some(theirs.is_some() && theirs == Some(ours));
            if c.identical == Some(false) {
                refusals.push(format!(
                    "volume `{}` already exists in `{}` with different content: re-run with --on-conflict replace to overwrite it (the old one is kept until the import commits)",
                    c.volume,
                    volumes_dir.display()
                ));
            }
        }
    }
    let needed = stage.data_bytes;
    if !dry_run && needed > free_bytes && free_bytes > 0 {
        refusals.push(format!(
            "the bundle's files need {needed} bytes but `{}` has {free_bytes} free",
            root.path().display()
        ));
    }
    let create: Vec<String> = header
        .volumes
        .iter()
        .filter(|v| !conflicts.iter().any(|c| c.volume == v.name))
        .map(|v| v.name.clone())
        .collect();
    let mut report = ImportReport {
        header,
        trailer,
        create,
        conflicts,
        replaced: Vec::new(),
        skipped_identical: Vec::new(),
        checkpoints: Vec::new(),
        rewritten_sources: Vec::new(),
        metadata: None,
        free_bytes,
        needed_bytes: needed,
        dry_run,
        containers_from_bundle: Vec::new(),
        verify_slots: Vec::new(),
        _bundle_configs: None,
        tops: std::mem::take(&mut stage.tops),
    };
    if dry_run {
        return Ok(report);
    }
    if !refusals.is_empty() {
        stage.discard();
        return Err(ImportError::Refused(refusals));
    }
    let Some(staging) = stage.dir.clone() else {
        return Err(ImportError::Refused(vec![
            "the bundle holds nothing to import".into(),
        ]));
    };
    // Durable before it becomes visible: one syncfs for all staged files.
    sync_filesystem(&staging).map_err(werr(&staging))?;

    // A signal between two renames would leave the target half migrated:
    // SIGINT, SIGTERM and SIGHUP wait until the commit is over.
    let deferred = DeferSignals::new();
    let commit = commit(root, &staging, &mut report, engine);
    drop(deferred);
    if let Err(e) = commit {
        stage.discard();
        return Err(e);
    }
    if report
        .metadata
        .as_ref()
        .is_some_and(|m| matches!(m, MetadataOutcome::Written(_)))
    {
        // The daemon is stopped: its container configs may be edited.
        report.rewritten_sources = rewrite_sources(root, &report.header)?;
    }
    // The carried containers' configs, for verification when the target
    // does not hold them.
    let keep = tempfile::tempdir().map_err(werr(Path::new("/tmp")))?;
    collect_verify_slots(root, &staging, keep.path(), &mut report)?;
    report._bundle_configs = Some(keep);
    stage.discard();
    Ok(report)
}

/// Moves staged volumes (and checkpoints) into place; on any error, moves
/// everything back.
fn commit(
    root: &DataRoot,
    staging: &Path,
    report: &mut ImportReport,
    engine: Option<&dyn Engine>,
) -> Result<(), ImportError> {
    let volumes_dir = root.volumes_dir();
    if !volumes_dir.exists() {
        fs::DirBuilder::new()
            .mode(0o701)
            .create(&volumes_dir)
            .map_err(werr(&volumes_dir))?;
    }
    let aside = staging.join("replaced");
    fs::create_dir_all(&aside).map_err(werr(&aside))?;
    // Renames done so far, to undo in reverse: (from, to).
    let mut done: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut attempt = || -> Result<(), (PathBuf, io::Error)> {
        for v in &report.header.volumes {
            let target = volumes_dir.join(&v.name);
            let staged = staging.join("volumes").join(&v.name);
            if let Some(c) = report.conflicts.iter().find(|c| c.volume == v.name) {
                if c.identical == Some(true) {
                    report.skipped_identical.push(v.name.clone());
                    continue;
                }
                let old = aside.join(&v.name);
                fs::rename(&target, &old).map_err(|e| (target.clone(), e))?;
                done.push((target.clone(), old));
                report.replaced.push(v.name.clone());
            }
            fs::rename(&staged, &target).map_err(|e| (target.clone(), e))?;
            done.push((staged, target));
        }
        for c in &report.header.containers {
            let Some(cp) = &c.checkpoint else { continue };
            let staged = staging
                .join("containers")
                .join(&c.id)
                .join("checkpoints")
                .join(cp);
            let target_container = root.container_dir(&c.id);
            if !staged.exists() || !target_container.is_dir() {
                continue;
            }
            let dir = target_container.join("checkpoints");
            if !dir.exists() {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|e| (dir.clone(), e))?;
            }
            let target = dir.join(cp);
            if target.exists() {
                let old = aside.join(format!("checkpoint-{}-{cp}", c.id));
                fs::rename(&target, &old).map_err(|e| (target.clone(), e))?;
                done.push((target.clone(), old));
            }
            fs::rename(&staged, &target).map_err(|e| (target.clone(), e))?;
            done.push((staged, target.clone()));
            report.checkpoints.push(target.display().to_string());
        }
        Ok(())
    };
    let outcome = attempt();
    let outcome = outcome.and_then(|()| {
        let records: Vec<VolumeRecord> = report
            .header
            .volumes
            .iter()
            .map(|v| {
                v.record.clone().unwrap_or(VolumeRecord {
                    name: v.name.clone(),
                    driver: "local".into(),
                    labels: None,
                    options: None,
                })
            })
            .collect();
        match metadata::write_records(&root.metadata_db(), &records) {
            Ok(()) => {
                report.metadata = Some(MetadataOutcome::Written(records.len()));
                Ok(())
            }
            Err(MetadataError::Locked { .. }) => {
                report.metadata = Some(match engine {
                    Some(e) => register(root, e, report, &records),
                    None => MetadataOutcome::DaemonRunning,
                });
                Ok(())
            }
            Err(e) => Err((root.metadata_db(), io::Error::other(e.to_string()))),
        }
    });
    match outcome {
        Ok(()) => {
            let _ = File::open(&volumes_dir).and_then(|d| d.sync_all());
            Ok(())
        }
        Err((path, source)) => {
            for (from, to) in done.iter().rev() {
                let _ = fs::rename(to, from);
            }
            report.replaced.clear();
            report.skipped_identical.clear();
            report.checkpoints.clear();
            Err(ImportError::Commit { path, source })
        }
    }
}

/// Registers committed volumes with a running daemon, then puts `_data`
/// back as the bundle had it: dockerd 20.10 chowns/chmods `_data` to
/// root:root 0755 when it creates a volume over an existing directory.
fn register(
    root: &DataRoot,
    engine: &dyn Engine,
    report: &ImportReport,
    records: &[VolumeRecord],
) -> MetadataOutcome {
    let mut ok = 0;
    let mut failed = Vec::new();
    for (v, record) in report.header.volumes.iter().zip(records) {
        if let Err(e) = engine.create_volume(record) {
            failed.push((v.name.clone(), e.to_string()));
            continue;
        }
        match put_back(root, &v.name, report.tops.get(&v.name)) {
            Ok(()) => ok += 1,
            Err((path, e)) => failed.push((
                v.name.clone(),
                format!(
                    "registered, but `{}` could not be put back as it was: {e}",
                    path.display()
                ),
            )),
        }
    }
    MetadataOutcome::Registered { ok, failed }
}

/// Restores a registered volume's `_data`, opts.json and directory as the
/// bundle had them: dockerd 20.10 chowns/chmods `_data` to root:root 0755
/// and rewrites opts.json when it creates a volume over existing files.
/// The directory comes last: writing inside it changes its mtime.
fn put_back(
    root: &DataRoot,
    name: &str,
    top: Option<&VolumeTop>,
) -> Result<(), (PathBuf, io::Error)> {
    let Some(top) = top else { return Ok(()) };
    if let Some(meta) = &top.data {
        let data = root.volume_data_dir(name);
        restore_attrs(&data, meta).map_err(|e| (data, e))?;
    }
    if let Some((meta, bytes)) = &top.opts {
        let opts = root.volume_dir(name).join("opts.json");
        let tmp = root.volume_dir(name).join(".opts.json.volmig-tmp");
        let write = || -> io::Result<()> {
            write_new(&tmp, bytes)?;
            restore_attrs(&tmp, meta)?;
            fs::rename(&tmp, &opts)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err((opts, e));
        }
    }
    if let Some(meta) = &top.dir {
        let dir = root.volume_dir(name);
        restore_attrs(&dir, meta).map_err(|e| (dir, e))?;
    }
    Ok(())
}

/// Points the stored `Source` of the carried containers' volume mounts at
/// this data-root. dockerd recomputes a local volume's path, except 20.10.3
/// to 25.x with a z/Z mode (the default for `-v name:/p`), which evaluate
/// the stored Source: after a move to another data-root path those fail
/// with `error evaluating symlinks from mount source`. Each file is
/// replaced atomically, keeping its mode.
fn rewrite_sources(root: &DataRoot, header: &BundleHeader) -> Result<Vec<String>, ImportError> {
    let mut rewritten = Vec::new();
    for c in &header.containers {
        let path = root.container_dir(&c.id).join("config.v2.json");
        let Ok(bytes) = fs::read(&path) else { continue };
        let Ok(mut config) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let mut changed = false;
        if let Some(mounts) = config
            .get_mut("MountPoints")
            .and_then(|m| m.as_object_mut())
        {
            for mount in mounts.values_mut() {
                let name = mount
                    .get("Name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("")
                    .to_string();
                let is_local_volume = mount.get("Driver").and_then(|d| d.as_str()) == Some("local");
                if name.is_empty()
                    || !is_local_volume
                    || !header.volumes.iter().any(|v| v.name == name)
                {
                    continue;
                }
                let want = root.volume_data_dir(&name).display().to_string();
                let source = mount.get("Source").and_then(|s| s.as_str()).unwrap_or("");
                if !source.is_empty() && source != want {
                    mount["Source"] = serde_json::Value::String(want);
                    changed = true;
                }
            }
        }
        if !changed {
            continue;
        }
        let mode = fs::metadata(&path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
            .unwrap_or(0o600);
        let json = serde_json::to_vec(&config).map_err(|e| ImportError::Write {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        let tmp = path.with_extension("json.volmig-tmp");
        let write = || -> io::Result<()> {
            let mut f = File::options()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        if let Err(source) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(ImportError::Write { path, source });
        }
        rewritten.push(path.display().to_string());
    }
    Ok(rewritten)
}

fn collect_verify_slots(
    root: &DataRoot,
    staging: &Path,
    keep: &Path,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    let target_slots = containers::load_all(root).map_err(werr(&root.containers_dir()))?;
    for c in &report.header.containers {
        if let Some(slot) = target_slots.iter().find(|s| s.id == c.id) {
            report.verify_slots.push(slot.clone());
            continue;
        }
        let staged = staging.join("containers").join(&c.id);
        let kept = keep.join(&c.id);
        fs::create_dir_all(&kept).map_err(werr(&kept))?;
        for file in ["config.v2.json", "hostconfig.json"] {
            if staged.join(file).exists() {
                fs::copy(staged.join(file), kept.join(file)).map_err(werr(&kept))?;
            }
        }
        report.containers_from_bundle.push(c.name.clone());
        report.verify_slots.push(ContainerSlot {
            id: c.id.clone(),
            dir: kept.clone(),
            loaded: containers::load_container(&c.id, &kept),
        });
    }
    Ok(())
}

/// The content digest of a target volume, computed exactly as a bundle's
/// per-volume digest (by writing it to nowhere).
pub fn volume_digest(root: &DataRoot, name: &str) -> Result<String, ImportError> {
    let header = BundleHeader {
        format: crate::bundle::FORMAT.into(),
        tool: String::new(),
        source_host: String::new(),
        source_data_root: String::new(),
        containers: Vec::new(),
        volumes: Vec::new(),
    };
    let sink = File::options()
        .write(true)
        .open("/dev/null")
        .map_err(werr(Path::new("/dev/null")))?;
    let fail = |e: crate::bundle::writer::WriteError| ImportError::Write {
        path: root.volume_dir(name),
        source: io::Error::other(e.to_string()),
    };
    let mut w = BundleWriter::new(sink, Compression::None, &header, &NoProgress).map_err(fail)?;
    w.declare_volume(name);
    let base = format!("volumes/{name}");
    w.add_file(base.as_bytes(), &root.volume_dir(name), Some(name))
        .map_err(fail)?;
    w.add_tree(
        format!("{base}/_data").as_bytes(),
        &root.volume_data_dir(name),
        Some(name),
    )
    .map_err(fail)?;
    let opts = root.volume_dir(name).join("opts.json");
    if opts.exists() {
        w.add_file(format!("{base}/opts.json").as_bytes(), &opts, Some(name))
            .map_err(fail)?;
    }
    let (trailer, _) = w.finish().map_err(fail)?;
    Ok(trailer
        .volumes
        .get(name)
        .map(|s| s.digest.clone())
        .unwrap_or_default())
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread until dropped; one
/// that arrives meanwhile is delivered then (and ends the process after
/// the commit, not during it).
struct DeferSignals(Option<nix::sys::signal::SigSet>);

impl DeferSignals {
    fn new() -> DeferSignals {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal};
        let mut set = SigSet::empty();
        for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            set.add(sig);
        }
        let mut old = SigSet::empty();
        match nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)) {
            Ok(()) => DeferSignals(Some(old)),
            Err(_) => DeferSignals(None),
        }
    }
}

impl Drop for DeferSignals {
    fn drop(&mut self) {
        if let Some(old) = self.0.take() {
            let _ = nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&old),
                None,
            );
        }
    }
}

fn sync_filesystem(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    // SAFETY: syncfs on a valid descriptor.
    if unsafe { libc::syncfs(std::os::unix::io::AsRawFd::as_raw_fd(&dir)) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Largest opts.json accepted (dockerd writes about 100 bytes).
const MAX_OPTS_JSON: u64 = 1 << 20;

/// Writes entries into the staging directory as the reader verifies them.
struct Stager<'a> {
    root: &'a DataRoot,
    policy: OnConflict,
    dry_run: bool,
    staging_root: PathBuf,
    /// This import's staging directory, once created.
    dir: Option<PathBuf>,
    conflicts: Vec<Conflict>,
    /// Directories created and not yet finished (their mtime and mode are
    /// set once nothing more is written inside them).
    dirs: Vec<(Vec<u8>, EntryMeta)>,
    /// Bytes of file data to write (holes excluded): the space needed.
    data_bytes: u64,
    /// Each volume's own entries (its directory, `_data`, opts.json), to
    /// put back after a running daemon registered the volume over them.
    tops: BTreeMap<String, VolumeTop>,
}

/// The top entries of one volume, as the bundle has them.
#[derive(Debug, Clone, Default)]
pub struct VolumeTop {
    dir: Option<EntryMeta>,
    data: Option<EntryMeta>,
    opts: Option<(EntryMeta, Vec<u8>)>,
}

impl Stager<'_> {
    fn discard(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = fs::remove_dir_all(&dir);
        }
        let _ = fs::remove_dir(&self.staging_root);
    }

    fn staged(&self, bundle_path: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let base = self.dir.clone().unwrap_or_default();
        base.join(std::ffi::OsStr::from_bytes(bundle_path))
    }

    /// Whether `bundle_path` is, in the staging directory, a non-directory
    /// (file, symlink itself, fifo, node) reached through real directories
    /// only: no symlink on the way.
    fn is_staged_leaf(&self, bundle_path: &[u8]) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let Some(mut path) = self.dir.clone() else {
            return false;
        };
        let parts: Vec<&[u8]> = bundle_path.split(|&b| b == b'/').collect();
        for (i, part) in parts.iter().enumerate() {
            if matches!(*part, b"" | b"." | b"..") {
                return false;
            }
            path.push(std::ffi::OsStr::from_bytes(part));
            let Ok(m) = fs::symlink_metadata(&path) else {
                return false;
            };
            let last = i + 1 == parts.len();
            let ok = if last { !m.is_dir() } else { m.is_dir() };
            if !ok {
                return false;
            }
        }
        true
    }

    /// Finishes every open directory that `next` is not inside.
    fn close_dirs(&mut self, next: &[u8]) -> Result<(), ReadError> {
        while let Some((path, meta)) = self.dirs.last() {
            let inside =
                next.len() > path.len() && next.starts_with(path) && next[path.len()] == b'/';
            if inside {
                break;
            }
            let target = self.staged(path);
            restore_attrs(&target, meta).map_err(|e| visitor_err(&target, e))?;
            self.dirs.pop();
        }
        Ok(())
    }

    fn create_staging(&mut self) -> Result<(), ReadError> {
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&self.staging_root)
            .map_err(|e| visitor_err(&self.staging_root, e))?;
        remove_stale_staging(&self.staging_root);
        // Renames into volumes/ must stay on one filesystem.
        let volumes_dir = self.root.volumes_dir();
        if let (Ok(a), Ok(b)) = (fs::metadata(&self.staging_root), fs::metadata(&volumes_dir)) {
            if a.dev() != b.dev() {
                return Err(ReadError::Visitor(format!(
                    "`{}` is on another filesystem than `{}`: volmig stages beside the volumes so that committing is a rename; mount them together",
                    volumes_dir.display(),
                    self.staging_root.display()
                )));
            }
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = self
            .staging_root
            .join(format!("{}-{nanos}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| visitor_err(&dir, e))?;
        fs::create_dir(dir.join("volumes")).map_err(|e| visitor_err(&dir, e))?;
        fs::create_dir(dir.join("containers")).map_err(|e| visitor_err(&dir, e))?;
        self.dir = Some(dir);
        Ok(())
    }
}

fn visitor_err(path: &Path, e: io::Error) -> ReadError {
    ReadError::Visitor(format!("cannot write `{}`: {e}", path.display()))
}

/// Staging directories of imports whose process is gone.
fn remove_stale_staging(staging_root: &Path) {
    let Ok(entries) = fs::read_dir(staging_root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn restore_attrs(path: &Path, meta: &EntryMeta) -> io::Result<()> {
    let attrs = FileAttrs {
        kind: match meta.kind {
            EntryKind::Dir => FileKind::Dir,
            EntryKind::Symlink => FileKind::Symlink,
            EntryKind::Fifo => FileKind::Fifo,
            EntryKind::Char => FileKind::Char,
            EntryKind::Block => FileKind::Block,
            _ => FileKind::File,
        },
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        mtime: meta.mtime,
        mtime_nsec: meta.mtime_nsec,
        size: meta.size,
        rdev_major: meta.rdev_major,
        rdev_minor: meta.rdev_minor,
        nlink: 1,
        dev: 0,
        ino: 0,
        xattrs: meta.xattrs.clone(),
    };
    fileattrs::restore(path, &attrs)
}

impl Visitor for Stager<'_> {
    fn header(&mut self, header: &BundleHeader) -> Result<(), ReadError> {
        let mut refusals = Vec::new();
        for v in &header.volumes {
            if self.root.volume_dir(&v.name).symlink_metadata().is_ok() {
                self.conflicts.push(Conflict {
                    volume: v.name.clone(),
                    identical: None,
                });
                if self.policy == OnConflict::Fail {
                    refusals.push(format!(
                        "volume `{}` already exists in `{}`: re-run with --on-conflict skip-identical or replace",
                        v.name,
                        self.root.volumes_dir().display()
                    ));
                }
            }
        }
        if !refusals.is_empty() && !self.dry_run {
            return Err(ReadError::Visitor(refusals.join("\n")));
        }
        if !self.dry_run {
            self.create_staging()?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        _header: &BundleHeader,
        meta: &EntryMeta,
        place: Place<'_>,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        if meta.kind == EntryKind::File {
            let written = match &meta.sparse {
                Some(segments) => segments.iter().map(|s| s.1).sum(),
                None => meta.size,
            };
            self.data_bytes = self.data_bytes.saturating_add(written);
        }
        if let Place::VolumeOpts { name } = place {
            // # Security
            // An opts.json dockerd cannot decode stops the whole daemon.
            let mut bytes = Vec::new();
            data.take(MAX_OPTS_JSON + 1)
                .read_to_end(&mut bytes)
                .map_err(ReadError::Io)?;
            // Whole or not at all: a prefix can decode (`{}` then spaces)
            // and would be staged in place of the file the digest covers.
            if bytes.len() as u64 > MAX_OPTS_JSON {
                return Err(ReadError::Hostile {
                    entry: String::from_utf8_lossy(&meta.path).into_owned(),
                    reason: format!("{} bytes is too large for an opts.json", meta.size),
                });
            }
            if let Err(go_error) = VolumeOptions::decode(&bytes) {
                return Err(ReadError::Hostile {
                    entry: String::from_utf8_lossy(&meta.path).into_owned(),
                    reason: format!("dockerd could not parse it and would not start: error while unmarshaling volume options for volume: {name}: {go_error}"),
                });
            }
            if self.dry_run {
                return Ok(());
            }
            self.tops.entry(name.to_string()).or_default().opts =
                Some((meta.clone(), bytes.clone()));
            self.close_dirs(&meta.path)?;
            let target = self.staged(&meta.path);
            write_new(&target, &bytes).map_err(|e| visitor_err(&target, e))?;
            return restore_attrs(&target, meta).map_err(|e| visitor_err(&target, e));
        }
        if self.dry_run {
            return Ok(());
        }
        match place {
            Place::VolumeDir { name } => {
                self.tops.entry(name.to_string()).or_default().dir = Some(meta.clone())
            }
            Place::VolumeData { name, rel: b"" } => {
                self.tops.entry(name.to_string()).or_default().data = Some(meta.clone())
            }
            _ => {}
        }
        self.close_dirs(&meta.path)?;
        let target = self.staged(&meta.path);
        let fail = |e: io::Error| visitor_err(&target, e);
        match meta.kind {
            EntryKind::Dir => {
                // Created private; mode, owner and mtime once it is complete.
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&target)
                    .map_err(fail)?;
                self.dirs.push((meta.path.clone(), meta.clone()));
                return Ok(());
            }
            EntryKind::File => {
                let mut file = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(fail)?;
                write_content(&mut file, meta, data).map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => ReadError::Truncated(String::new()),
                    _ => fail(e),
                })?;
            }
            EntryKind::Symlink => {
                use std::os::unix::ffi::OsStrExt;
                let link = std::ffi::OsStr::from_bytes(meta.link.as_deref().unwrap_or_default());
                std::os::unix::fs::symlink(link, &target).map_err(fail)?;
            }
            EntryKind::Hardlink => {
                let link = meta.link.as_deref().unwrap_or_default();
                // # Security
                // The reader checked that the target's name sorts before
                // this entry inside the same volume, not that it was an
                // entry: `l -> /etc` then a link to `l/passwd` would have
                // link(2) follow `l` and hardlink a host file into the
                // volume. Walk the staged path without following anything:
                // real directories down to a non-directory, which link(2)
                // (linkat without AT_SYMLINK_FOLLOW) links itself, a
                // symlink included.
                if !self.is_staged_leaf(link) {
                    return Err(ReadError::Hostile {
                        entry: String::from_utf8_lossy(&meta.path).into_owned(),
                        reason: format!(
                            "hardlink to `{}`, which is not a file of this bundle",
                            String::from_utf8_lossy(link)
                        ),
                    });
                }
                fs::hard_link(self.staged(link), &target).map_err(fail)?;
                return Ok(());
            }
            EntryKind::Fifo | EntryKind::Char | EntryKind::Block => {
                let kind = match meta.kind {
                    EntryKind::Fifo => FileKind::Fifo,
                    EntryKind::Char => FileKind::Char,
                    _ => FileKind::Block,
                };
                fileattrs::make_node(&target, kind, meta.rdev_major, meta.rdev_minor)
                    .map_err(fail)?;
            }
        }
        restore_attrs(&target, meta).map_err(|e| visitor_err(&target, e))
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::options().write(true).create_new(true).open(path)?;
    f.write_all(bytes)
}

/// Writes a file's content; holes of a sparse file stay holes.
fn write_content(file: &mut File, meta: &EntryMeta, data: &mut dyn Read) -> io::Result<()> {
    let mut buf = vec![0u8; crate::bundle::IO_CHUNK];
    let whole = [(0, meta.size)];
    let segments = meta.sparse.as_deref().unwrap_or(&whole);
    for &(off, len) in segments {
        if meta.sparse.is_some() {
            file.seek(SeekFrom::Start(off))?;
        }
        let mut left = len;
        while left > 0 {
            let want = (left as usize).min(buf.len());
            let n = data.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "entry ends early",
                ));
            }
            file.write_all(&buf[..n])?;
            left -= n as u64;
        }
    }
    if meta.sparse.is_some() {
        // Holes at the end exist only as the file's length.
        file.set_len(meta.size)?;
    }
    Ok(())
}
