//! `import`: recreate a bundle's volumes under a target data-root, staged
//! and all-or-nothing, then re-run the scan and verify the carried
//! containers.
//!
//! The order of an import, and what a crash at each point leaves:
//! 1. take volmig's lock on the data-root (`lock`), finish or roll back any
//!    interrupted import (`commit::recover_all`);
//! 2. stage every entry under `<R>/volmig-staging/<id>/` as the reader
//!    verifies it, then check what landed (`stage`): a crash leaves only
//!    copies of the bundle there, which the next run removes;
//! 3. write the journal (`journal`) and carry out the commit (`commit`):
//!    metadata.db in one atomic replacement, then one rename or exchange
//!    per volume; a crash leaves a journal the next run carries forward;
//! 4. rewrite stale volume Sources in container configs; for a bundle of a
//!    pre-copy round, record what was laid down as the base for deltas
//!    (`base`: outside the transaction, a failure there is a warning);
//!    remove staging.
//!
//! Nothing is ever written under `<R>/volumes/` but finished volumes (and
//! metadata.db): dockerd takes every directory there for a volume.

mod base;
mod bind;
mod commit;
pub mod delta;
mod digest;
mod journal;
mod landed;
mod lock;
mod plan;
mod register;
mod stage;
mod staged;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::bundle::reader::{self, ReadError};
use crate::bundle::{BundleHeader, Trailer};
use crate::dataroot::containers::{self, ContainerSlot};
use crate::dataroot::metadata::{self, VolumeRecord, WriteAccess};
use crate::dataroot::DataRoot;
use crate::engine::Engine;
use crate::interrupt::{self, Critical};
use crate::progress::Progress;

pub use commit::{
    pending, pending_findings, Pending, RecoverError, Recovered, RecoveryOutcome, StepError,
};
use commit::{Settled, Unsettled};
use journal::Journal;
pub use journal::{Item, State};
pub use lock::{ImportLock, LockError};
use plan::{bundle_record, plan_commit};
use stage::{Stager, VolumeTop};
use staged::{import_delta, Dispatch, Staged, StagedDelta};

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

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub policy: OnConflict,
    /// Read and check everything, write nothing (not even the lock).
    pub dry_run: bool,
    /// Wait for another import holding the data-root instead of failing.
    pub wait: bool,
    /// `--map-path OLD=NEW`: bind-type volumes whose device is OLD (or
    /// below it) get their data, opts.json and record at NEW.
    pub map_paths: Vec<(PathBuf, PathBuf)>,
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
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    #[error(transparent)]
    Metadata(#[from] metadata::MetadataError),
    /// An earlier, interrupted import could not be finished: nothing of
    /// this bundle was written.
    #[error("{0}; this bundle was not imported")]
    Recover(#[source] Box<RecoverError>),
    #[error("interrupted by {}: the staging directory was removed and nothing was written to the data-root", interrupt::signal_name(*signal))]
    Interrupted { signal: i32 },
    /// This import failed, after it had settled earlier interrupted ones:
    /// the data-root did change (exit 1, not 2).
    #[error("{source} (before it, {} interrupted import(s) of this data-root were settled: `volmig scan` shows the result)", recovered.len())]
    AfterRecovery {
        recovered: Vec<Recovered>,
        source: Box<ImportError>,
    },
    /// A delta import that changed the target and could not settle it
    /// (undoing it failed, or its last step once applied): the journal in
    /// `staging` keeps what `volmig recover` needs.
    #[error("{why}")]
    DeltaUnsettled { why: String, staging: PathBuf },
    #[error("commit failed at {source}; everything was rolled back and the target is as it was")]
    Commit { source: Box<StepError> },
    #[error("commit failed at {commit}, and undoing it failed at {rollback}: the journal in `{}` keeps what is needed; fix the cause, then run `volmig recover`", staging.display())]
    CommitIncomplete {
        commit: Box<StepError>,
        rollback: Box<StepError>,
        staging: PathBuf,
    },
}

impl ImportError {
    /// The reasons of a refusal (nothing written), one each: the same
    /// list a dry run gives.
    pub fn refusals(&self) -> Option<&[String]> {
        match self {
            ImportError::Refused(why) | ImportError::Bundle(ReadError::Refused(why)) => Some(why),
            ImportError::AfterRecovery { source, .. } => source.refusals(),
            _ => None,
        }
    }

    /// Whether the data-root may have changed (exit 1, not 2).
    pub fn changed_target(&self) -> bool {
        matches!(
            self,
            ImportError::Recover(_)
                | ImportError::CommitIncomplete { .. }
                | ImportError::DeltaUnsettled { .. }
                | ImportError::AfterRecovery { .. }
        )
    }
}

fn werr(path: &Path) -> impl FnOnce(io::Error) -> ImportError + '_ {
    move |source| ImportError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// A bundle volume or checkpoint that exists on the target.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub item: Item,
    /// Whether the target's content digest equals the bundle's
    /// (computed for volumes under `skip-identical` only).
    pub identical: Option<bool>,
}

impl Conflict {
    /// The volume's name, for volume conflicts.
    pub fn volume(&self) -> Option<&str> {
        match &self.item {
            Item::Volume { name } => Some(name),
            Item::Checkpoint { .. } | Item::BindData { .. } => None,
        }
    }

    /// Why `policy` refuses it (the same text in a dry run and a real one).
    fn refusal(&self, root: &DataRoot, policy: OnConflict) -> String {
        let what = self.item.describe();
        let place = match &self.item {
            Item::Volume { .. } => root.volumes_dir(),
            Item::Checkpoint { container, .. } => root.checkpoints_dir(container),
            Item::BindData { target, volume, .. } => {
                return format!(
                    "`{}`, where volume `{volume}` keeps its data (its bind device), already holds other data: re-run with --on-conflict replace to overwrite it (the old data is kept until the import commits), or put the volume's data elsewhere with --map-path {}=NEW",
                    target.display(),
                    target.display()
                )
            }
        };
        match (policy, &self.item) {
            (OnConflict::Fail, Item::Volume { .. }) => format!(
                "{what} already exists in `{}`: re-run with --on-conflict skip-identical or replace",
                place.display()
            ),
            (OnConflict::SkipIdentical, Item::Volume { .. }) => format!(
                "{what} already exists in `{}` with different content: re-run with --on-conflict replace to overwrite it (the old one is kept until the import commits)",
                place.display()
            ),
            _ => format!(
                "{what} already exists in `{}`: re-run with --on-conflict replace to overwrite it (the old one is kept until the import commits), or remove it",
                place.display()
            ),
        }
    }

    /// Whether `policy` refuses it.
    fn refused_by(&self, policy: OnConflict) -> bool {
        match (policy, &self.item) {
            (OnConflict::Replace, _) => false,
            (OnConflict::Fail, _) => true,
            (OnConflict::SkipIdentical, Item::Volume { .. } | Item::BindData { .. }) => {
                self.identical != Some(true)
            }
            (OnConflict::SkipIdentical, Item::Checkpoint { .. }) => true,
        }
    }
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
    /// Why the import is (or, in a dry run, would be) refused.
    pub refusals: Vec<String>,
    pub replaced: Vec<String>,
    pub skipped_identical: Vec<String>,
    /// Checkpoints installed into existing target containers.
    pub checkpoints: Vec<String>,
    /// Device paths where bind-type volumes' data was laid down.
    pub bind_data: Vec<String>,
    /// `config.v2.json` files whose stale volume Source paths were rewritten.
    pub rewritten_sources: Vec<String>,
    pub metadata: Option<MetadataOutcome>,
    /// Interrupted imports this one finished or rolled back first.
    pub recovered: Vec<Recovered>,
    /// Work left after the commit (the volumes are in place): each with
    /// what to do. Non-empty means exit 1.
    pub pending: Vec<String>,
    /// The signal that arrived during the commit (which finished first).
    pub interrupted: Option<i32>,
    /// Bases for deltas recorded (`<R>/volmig-bases/<volume>.manifest`).
    pub bases: Vec<String>,
    /// What went wrong after the commit without making the import fail
    /// (a base not recorded): each says what it means.
    pub warnings: Vec<String>,
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
    /// A delta bundle: what applying it did (or, in a dry run, would do).
    pub delta: Option<delta::DeltaOutcome>,
}

impl ImportReport {
    /// A report of nothing done yet.
    fn new(header: BundleHeader, trailer: Trailer, dry_run: bool) -> ImportReport {
        ImportReport {
            header,
            trailer,
            create: Vec::new(),
            conflicts: Vec::new(),
            refusals: Vec::new(),
            replaced: Vec::new(),
            skipped_identical: Vec::new(),
            checkpoints: Vec::new(),
            bind_data: Vec::new(),
            rewritten_sources: Vec::new(),
            metadata: None,
            recovered: Vec::new(),
            pending: Vec::new(),
            interrupted: None,
            bases: Vec::new(),
            warnings: Vec::new(),
            free_bytes: 0,
            needed_bytes: 0,
            dry_run,
            containers_from_bundle: Vec::new(),
            verify_slots: Vec::new(),
            _bundle_configs: None,
            tops: BTreeMap::new(),
            delta: None,
        }
    }
}

/// Finishes or rolls back every interrupted import of `root`, under its
/// import lock (`volmig recover`).
pub fn recover(root: &DataRoot, wait: bool) -> Result<Vec<Recovered>, ImportError> {
    let _lock = ImportLock::acquire(&root.import_lock(), wait)?;
    // Short, and every step of it matters: a signal waits for its end.
    let _critical = Critical::enter();
    commit::recover_all(root).map_err(|e| ImportError::Recover(Box::new(e)))
}

/// Imports `input` into `root` (see the module doc). `engine` is the
/// daemon serving `root` if one runs: the volumes are then registered
/// through it, since its volume scan ran at its start.
pub fn import(
    root: &DataRoot,
    input: Box<dyn Read>,
    opts: &ImportOptions,
    engine: Option<&dyn Engine>,
    progress: &dyn Progress,
) -> Result<ImportReport, ImportError> {
    let lock = match opts.dry_run {
        true => None,
        false => Some(ImportLock::acquire(&root.import_lock(), opts.wait)?),
    };
    let recovered = match lock {
        Some(_) => commit::recover_all(root).map_err(|e| ImportError::Recover(Box::new(e)))?,
        None => Vec::new(),
    };
    let result = import_locked(root, input, opts, engine, progress);
    drop(lock);
    match result {
        Ok(mut report) => {
            report.recovered = recovered;
            Ok(report)
        }
        Err(source) if !recovered.is_empty() => Err(ImportError::AfterRecovery {
            recovered,
            source: Box::new(source),
        }),
        Err(e) => Err(e),
    }
}

/// The import proper, under the lock, once earlier imports are settled.
fn import_locked(
    root: &DataRoot,
    input: Box<dyn Read>,
    opts: &ImportOptions,
    engine: Option<&dyn Engine>,
    progress: &dyn Progress,
) -> Result<ImportReport, ImportError> {
    let mut stage = Stager::new(root, opts.policy, opts.dry_run, &opts.map_paths);
    let mut report = match stage_bundle(root, input, opts, &mut stage, progress) {
        Ok(Staged::Full(report)) => *report,
        Ok(Staged::Delta(delta)) => return import_delta(root, *delta, opts),
        Err(e) => {
            stage.discard();
            return Err(match stage.interrupted {
                Some(signal) => ImportError::Interrupted { signal },
                None => e,
            });
        }
    };
    if opts.dry_run {
        return Ok(report);
    }
    if !report.refusals.is_empty() {
        stage.discard();
        return Err(ImportError::Refused(report.refusals));
    }
    let Some(staging) = stage.dir.clone() else {
        return Err(ImportError::Refused(vec![
            "the bundle holds nothing to import".into(),
        ]));
    };
    let spool = stage.base.take();
    let result = commit_staged(root, &staging, &stage, spool, &mut report, engine);
    if result.is_err() {
        // Refused by remove_staging while a journal there is unsettled.
        stage.discard();
    }
    result.map(|()| report)
}

/// Reads the whole bundle into staging (or, in a dry run, only checks
/// it), and works out conflicts and refusals.
fn stage_bundle<'a>(
    root: &'a DataRoot,
    input: Box<dyn Read>,
    opts: &ImportOptions,
    stage: &mut Stager<'a>,
    progress: &dyn Progress,
) -> Result<Staged<'a>, ImportError> {
    let free_bytes = nix::sys::statvfs::statvfs(root.path())
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0);
    let input = reader::open(input)?;
    let mut dispatch = Dispatch {
        full: stage,
        delta: None,
        root,
        dry_run: opts.dry_run,
    };
    let read = reader::read(input, &mut dispatch, progress, reader::Check::Content);
    let Dispatch {
        full: stage, delta, ..
    } = dispatch;
    let (header, trailer) = match (read, delta) {
        (Ok((header, trailer)), Some(stage)) => {
            return Ok(Staged::Delta(Box::new(StagedDelta {
                stage,
                header,
                trailer,
            })))
        }
        (Err(e), Some(mut d)) => {
            d.discard();
            return Err(match d.interrupted {
                Some(signal) => ImportError::Interrupted { signal },
                None => e.into(),
            });
        }
        (read, None) => read?,
    };
    stage.close_dirs(&[])?;
    bind::check_opts_devices(&header, &stage.opts_locations)?;
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
            return Err(ReadError::Corrupt(missing.join("; ")).into());
        }
    }
    let header = map_header(header, |d| stage.map_device(d));
    // Conflicts: identical or not, decided now that the bundle is verified.
    let mut conflicts = stage.conflicts.clone();
    for c in &mut conflicts {
        if let (OnConflict::SkipIdentical, Some(name)) = (opts.policy, c.volume()) {
            let theirs = trailer.volumes.get(name).map(|s| s.digest.clone());
            let ours = digest::target_volume(root, name, stage)?;
            c.identical = Some(ours.is_some() && theirs == ours);
        }
    }
    // A bind target is identical when its volume is, data included.
    let same: Vec<String> = conflicts
        .iter()
        .filter(|c| c.identical == Some(true))
        .filter_map(|c| c.volume().map(str::to_string))
        .collect();
    for c in &mut conflicts {
        if let Item::BindData { volume, .. } = &c.item {
            if opts.policy == OnConflict::SkipIdentical {
                c.identical = Some(same.contains(volume));
            }
        }
    }
    let mut refusals: Vec<String> = conflicts
        .iter()
        .filter(|c| c.refused_by(opts.policy))
        .map(|c| c.refusal(root, opts.policy))
        .collect();
    let needed = stage.data_bytes;
    if needed > free_bytes && free_bytes > 0 {
        refusals.push(format!(
            "the bundle's files need {needed} bytes but `{}` has {free_bytes} free",
            root.path().display()
        ));
    }
    let create = header
        .volumes
        .iter()
        .filter(|v| !conflicts.iter().any(|c| c.volume() == Some(&v.name)))
        .map(|v| v.name.clone())
        .collect();
    let mut report = ImportReport::new(header, trailer, opts.dry_run);
    report.create = create;
    report.conflicts = conflicts;
    report.refusals = refusals;
    report.free_bytes = free_bytes;
    report.needed_bytes = needed;
    report.tops = std::mem::take(&mut stage.tops);
    Ok(Staged::Full(Box::new(report)))
}

/// The header as the target gets it: each bind device moved by
/// `--map-path`, in the volume's device and in its record's options.
fn map_header(mut header: BundleHeader, map: impl Fn(&str) -> String) -> BundleHeader {
    for v in &mut header.volumes {
        let Some(d) = v.device.as_mut() else { continue };
        d.device = map(&d.device);
        if let Some(options) = v.record.as_mut().and_then(|r| r.options.as_mut()) {
            if let Some(device) = options.get_mut("device") {
                *device = map(device);
            }
        }
    }
    header
}

/// Steps 3 and 4 of the module doc, for a verified staging.
fn commit_staged(
    root: &DataRoot,
    staging: &Path,
    stage: &Stager,
    spool: Option<base::BaseSpool>,
    report: &mut ImportReport,
    engine: Option<&dyn Engine>,
) -> Result<(), ImportError> {
    if let Some(signal) = interrupt::requested() {
        return Err(ImportError::Interrupted { signal });
    }
    let db_path = root.metadata_db();
    let mut db = match metadata::lock_for_write(&db_path, metadata::READER_PATIENCE) {
        Ok(WriteAccess::Free(lock)) => Some(lock),
        Ok(WriteAccess::Daemon) => None,
        Err(e) => return Err(e.into()),
    };
    let live = db.is_none() && engine.is_some();
    let mut journal = plan_commit(root, staging, report, db.as_ref(), live, &stage.binds)?;
    // Durable before it becomes visible: one syncfs for all staged files.
    let dir = File::open(staging).map_err(werr(staging))?;
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))
        .map_err(|e| werr(staging)(io::Error::from(e)))?;
    // What is committed is what landed, checked last before the journal.
    stage.check_landed()?;

    // From the journal on, a signal waits for the commit to end.
    if let Some(signal) = interrupt::requested() {
        return Err(ImportError::Interrupted { signal });
    }
    let critical = Critical::enter();
    journal.save(staging)?;
    match commit::settle(root, staging, &mut journal, db.as_mut(), true) {
        Ok(Settled::Committed) => {}
        Ok(Settled::RolledBack) | Err(Unsettled { forward: None, .. }) => {
            return Err(ImportError::Commit {
                source: Box::new(StepError::Lost {
                    what: "the commit".into(),
                    target: staging.to_path_buf(),
                    why: "it was rolled back",
                }),
            })
        }
        Err(Unsettled {
            forward: Some(failed),
            backward: None,
        }) => return Err(ImportError::Commit { source: failed }),
        Err(Unsettled {
            forward: Some(commit),
            backward: Some(rollback),
        }) => {
            return Err(ImportError::CommitIncomplete {
                commit,
                rollback,
                staging: staging.to_path_buf(),
            })
        }
    }
    drop(db);
    // The recorded bases describe the volumes as they were: they go now
    // (a round's new ones are recorded last, once nothing else changes
    // the volumes).
    let volumes: Vec<String> = report
        .header
        .volumes
        .iter()
        .map(|v| v.name.clone())
        .collect();
    report
        .warnings
        .extend(base::forget(root, volumes.iter().map(String::as_str)));
    report_moves(root, &journal, report);
    report.metadata = Some(match (&journal.metadata, engine) {
        (Some(plan), _) => MetadataOutcome::Written(plan.new.len()),
        (None, Some(engine)) => {
            let records: Vec<VolumeRecord> =
                report.header.volumes.iter().map(bundle_record).collect();
            register::register(root, engine, report, &records)
        }
        (None, None) => MetadataOutcome::DaemonRunning,
    });
    let (rewritten, failed) = commit::rewrite_configs(root, &journal);
    report.rewritten_sources = rewritten;
    for f in failed {
        report
            .pending
            .push(format!("{f}: fix it, then run `volmig recover` to finish"));
    }
    match tempfile::tempdir() {
        Ok(keep) => {
            if let Err(e) = collect_verify_slots(root, staging, keep.path(), report) {
                report
                    .pending
                    .push(format!("the carried containers cannot be verified: {e}"));
            }
            report._bundle_configs = Some(keep);
        }
        Err(e) => report.pending.push(format!(
            "the carried containers cannot be verified: no temporary directory: {e}"
        )),
    }
    if let (Some(round), Some(spool)) = (&report.header.round, spool) {
        let data_dir = |name: &str| match stage.binds.get(name) {
            Some(bind) => bind.target.clone(),
            None => root.volume_data_dir(name),
        };
        let record_of = |name: &str| {
            let v = report.header.volumes.iter().find(|v| v.name == name)?;
            Some(plan::bundle_record(v))
        };
        let recorded = base::record(
            root,
            spool,
            &round.id,
            &report.trailer,
            &volumes,
            &data_dir,
            &record_of,
        );
        report
            .bases
            .extend(recorded.bases.iter().map(|p| p.display().to_string()));
        report.warnings.extend(recorded.warnings);
    }
    if report.pending.is_empty() {
        if let Err(e) = commit::remove_staging(staging) {
            report.pending.push(format!(
                "the import committed, but its staging could not be removed ({e}): `volmig recover` removes it"
            ));
        }
    }
    drop(critical);
    report.interrupted = interrupt::requested();
    Ok(())
}

/// Fills in what the commit did, from its journal.
fn report_moves(root: &DataRoot, journal: &Journal, report: &mut ImportReport) {
    for c in &report.conflicts {
        if let (Some(true), Some(name)) = (c.identical, c.volume()) {
            report.skipped_identical.push(name.to_string());
        }
    }
    for m in &journal.moves {
        match &m.item {
            Item::Volume { name } if m.old_ino.is_some() => report.replaced.push(name.clone()),
            Item::Volume { .. } => {}
            Item::BindData { target, .. } => report.bind_data.push(target.display().to_string()),
            Item::Checkpoint { container, name } => report
                .checkpoints
                .push(root.checkpoint_dir(container, name).display().to_string()),
        }
    }
}

/// The carried containers to verify: the target's own when it holds them,
/// else the bundle's configs (copied out of staging, which goes).
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
        for file in crate::dataroot::CONTAINER_FILES {
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
