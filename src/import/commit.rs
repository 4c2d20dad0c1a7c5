//! The commit of an import and its recovery: every crash rule in one place.
//!
//! A commit carries a journal (see `journal`) forward: metadata.db first
//! (one atomic file replacement), then each directory move. Each step looks
//! at the filesystem (inode numbers recorded in the journal) to learn
//! whether it is already done, so the same code finishes an interrupted
//! commit after kill -9 or a power cut, and the backward steps undo one.
//!
//! The invariant at every instant: each volume under `volumes/` is whole,
//! old or new, never missing. A replaced volume is swapped with
//! `renameat2(RENAME_EXCHANGE)` (dockerd started right after a crash
//! deletes the metadata.db record of a volume whose directory is missing,
//! labels and all); only filesystems without it (EINVAL) fall back to two
//! renames, with the old volume in staging in between. Nothing that holds a
//! replaced volume is deleted before the journal says `committed`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{renameat2, RenameFlags};

use super::journal::{FileId, Item, Journal, JournalError, Move, MovePaths, State};
use crate::dataroot::config_rewrite;
use crate::dataroot::metadata::{self, DbWriteLock, MetadataError, WriteAccess};
use crate::dataroot::DataRoot;
use crate::report::{Finding, FindingKind, Severity};

/// A step that failed, with the path it was working on.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("`{path}`: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// metadata.db is held by a running dockerd: nothing was changed.
    #[error("dockerd is running on this data-root (it holds `{path}`): stop it (systemctl stop docker), then run `volmig recover`")]
    DaemonRunning { path: PathBuf },
    #[error("{what} is in neither `{target}` nor the staging directory: {why}")]
    Lost {
        what: String,
        target: PathBuf,
        why: &'static str,
    },
    #[error("the delta import in `{staging}`: {why}")]
    Delta { staging: PathBuf, why: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StepError + '_ {
    move |source| StepError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where one of a move's directories is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Target,
    Staged,
    Aside,
    Nowhere,
}

fn locate(ino: u64, p: &MovePaths) -> At {
    let is = |path: &Path| {
        path.symlink_metadata()
            .is_ok_and(|m| m.is_dir() && m.ino() == ino)
    };
    if is(&p.target) {
        At::Target
    } else if is(&p.staged) {
        At::Staged
    } else if is(&p.aside) {
        At::Aside
    } else {
        At::Nowhere
    }
}

/// renameat2 flags the filesystem (EINVAL), kernel (ENOSYS) or a seccomp
/// filter (EOPNOTSUPP, EPERM-free) do not support.
fn unsupported(e: nix::errno::Errno) -> bool {
    use nix::errno::Errno;
    matches!(e, Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP)
}

/// A rename that never replaces: a name that appeared meanwhile fails it.
fn rename_new(from: &Path, to: &Path) -> Result<(), StepError> {
    match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // Filesystems without renameat2 flags: check, then rename (we hold
        // volmig's lock, and dockerd is stopped or never writes there).
        Err(e) if unsupported(e) && to.symlink_metadata().is_err() => {
            fs::rename(from, to).map_err(io_at(to))
        }
        Err(e) => Err(io_at(to)(io::Error::from(e))),
    }
}

/// Swaps two directories atomically; `Ok(false)` where the filesystem
/// cannot (the caller then takes two renames).
fn exchange(a: &Path, b: &Path) -> Result<bool, StepError> {
    match renameat2(None, a, None, b, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(true),
        Err(e) if unsupported(e) => Ok(false),
        Err(e) => Err(io_at(b)(io::Error::from(e))),
    }
}

/// Creates the directory `target` goes into (dockerd's mode), durably.
fn ensure_parent(target: &Path, mode: u32) -> Result<(), StepError> {
    let Some(parent) = target.parent() else {
        return Ok(());
    };
    match fs::DirBuilder::new().mode(mode).create(parent) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_at(parent)(e)),
        Ok(()) => match parent.parent() {
            Some(above) => File::open(above)
                .and_then(|d| d.sync_all())
                .map_err(io_at(above)),
            None => Ok(()),
        },
    }
}

/// dockerd's modes: `volumes/` 0701, `checkpoints/` 0700; the
/// directories above a bind target, 0755 as `mkdir -p` makes them.
fn parent_mode(item: &Item) -> u32 {
    match item {
        Item::Volume { .. } => 0o701,
        Item::Checkpoint { .. } => 0o700,
        Item::BindData { .. } => 0o755,
    }
}

/// Creates every missing directory above `target`, durably (a bind
/// target may be several levels below what exists: `/srv/app/data`).
fn ensure_parents(target: &Path, mode: u32) -> Result<(), StepError> {
    let mut missing = Vec::new();
    let mut at = target.parent();
    while let Some(dir) = at {
        if fs::symlink_metadata(dir).is_ok() {
            break;
        }
        missing.push(dir);
        at = dir.parent();
    }
    for dir in missing.into_iter().rev() {
        let child = dir.join("x");
        ensure_parent(&child, mode)?;
    }
    Ok(())
}

fn lost(m: &Move, p: &MovePaths, why: &'static str) -> StepError {
    StepError::Lost {
        what: m.item.describe(),
        target: p.target.clone(),
        why,
    }
}

/// Puts the new directory at the target and the old one (if any) aside.
fn forward_move(m: &Move, p: &MovePaths) -> Result<(), StepError> {
    let new_at = locate(m.new_ino, p);
    let Some(old_ino) = m.old_ino else {
        return match new_at {
            At::Target => Ok(()),
            At::Staged => {
                match m.item {
                    Item::BindData { .. } => ensure_parents(&p.target, parent_mode(&m.item))?,
                    _ => ensure_parent(&p.target, parent_mode(&m.item))?,
                }
                rename_new(&p.staged, &p.target)
            }
            _ => Err(lost(m, p, "the staged copy is gone")),
        };
    };
    match (new_at, locate(old_ino, p)) {
        (At::Target, At::Aside) => Ok(()),
        (At::Target, At::Staged) => rename_new(&p.staged, &p.aside),
        (At::Staged, At::Target) => {
            if !exchange(&p.staged, &p.target)? {
                rename_new(&p.target, &p.aside)?;
                return rename_new(&p.staged, &p.target);
            }
            rename_new(&p.staged, &p.aside)
        }
        (At::Staged, At::Aside) => rename_new(&p.staged, &p.target),
        _ => Err(lost(
            m,
            p,
            "neither the old nor the new directory is where the journal left them",
        )),
    }
}

/// Puts the old directory back at the target (or removes the new one).
fn backward_move(m: &Move, p: &MovePaths) -> Result<(), StepError> {
    let new_at = locate(m.new_ino, p);
    let Some(old_ino) = m.old_ino else {
        if new_at == At::Target {
            rename_new(&p.target, &p.staged)?;
        }
        return Ok(());
    };
    let old_at = locate(old_ino, p);
    let old_path = match old_at {
        At::Target => return Ok(()),
        At::Staged => &p.staged,
        At::Aside => &p.aside,
        At::Nowhere => return Err(lost(m, p, "the replaced directory is missing: do not delete the staging directory, look for it there")),
    };
    if new_at == At::Target {
        if exchange(old_path, &p.target)? {
            return Ok(());
        }
        let free = if old_at == At::Staged {
            &p.aside
        } else {
            &p.staged
        };
        rename_new(&p.target, free)?;
    }
    rename_new(old_path, &p.target)
}

/// fsyncs the directories whose entries the moves changed.
fn sync_dirs(moves: &[Move], root: &DataRoot, staging: &Path) -> Result<(), StepError> {
    let mut dirs = BTreeSet::new();
    for m in moves {
        let p = m.paths(root, staging);
        for path in [&p.target, &p.staged, &p.aside] {
            if let Some(parent) = path.parent() {
                dirs.insert(parent.to_path_buf());
            }
        }
    }
    for dir in dirs {
        match File::open(&dir) {
            Ok(f) => f.sync_all().map_err(io_at(&dir))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&dir)(e)),
        }
    }
    Ok(())
}

/// metadata.db for a commit: ours for the whole of it, or refused while a
/// running daemon holds it (nothing is moved then).
pub fn take_db(root: &DataRoot) -> Result<DbWriteLock, StepError> {
    let path = root.metadata_db();
    match metadata::lock_for_write(&path, metadata::READER_PATIENCE)? {
        WriteAccess::Free(lock) => Ok(lock),
        WriteAccess::Daemon => Err(StepError::DaemonRunning { path }),
    }
}

/// Carries the journal's commit forward to the end. `db` is metadata.db,
/// held by the caller for the whole commit when the journal writes it.
fn forward(
    root: &DataRoot,
    staging: &Path,
    journal: &Journal,
    db: Option<&mut DbWriteLock>,
) -> Result<(), StepError> {
    if let (Some(plan), Some(db)) = (&journal.metadata, db) {
        // `volumes/` first: the database lives in it.
        ensure_parent(&root.metadata_db(), 0o701)?;
        let changes: Vec<_> = plan.new.iter().map(|r| r.to_change()).collect();
        db.apply(staging, &changes)?;
    }
    for m in &journal.moves {
        forward_move(m, &m.paths(root, staging))?;
    }
    sync_dirs(&journal.moves, root, staging)
}

/// Undoes the journal's commit, whatever part of it was done: every move
/// is tried (the first failure is returned after the others), then the
/// records.
fn backward(
    root: &DataRoot,
    staging: &Path,
    journal: &Journal,
    db: Option<&mut DbWriteLock>,
) -> Result<(), StepError> {
    let mut first = None;
    for m in journal.moves.iter().rev() {
        if let Err(e) = backward_move(m, &m.paths(root, staging)) {
            first.get_or_insert(e);
        }
    }
    if let Err(e) = sync_dirs(&journal.moves, root, staging) {
        first.get_or_insert(e);
    }
    if let (Some(plan), Some(db)) = (&journal.metadata, db) {
        let now = fs::symlink_metadata(root.metadata_db())
            .ok()
            .map(|m| FileId::of(&m));
        // Never replaced (same file, unchanged since the plan): nothing to
        // undo, and nothing to write on a filesystem that may be full.
        if now != plan.orig {
            let changes: Vec<_> = plan.saved.iter().map(|r| r.to_change()).collect();
            if let Err(e) = db.apply(staging, &changes) {
                first.get_or_insert(e.into());
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// How `settle` left a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Every move and record is in place; the journal says `committed`.
    Committed,
    /// Everything was undone; the journal is removed.
    RolledBack,
}

/// Why `settle` could not finish either way; the journal stays.
#[derive(Debug)]
pub struct Unsettled {
    /// The forward step that failed (none when only rolling back).
    pub forward: Option<Box<StepError>>,
    /// The backward step that failed (none when not rolling back).
    pub backward: Option<Box<StepError>>,
}

/// Carries a journal to its end in the direction its state says. A
/// forward failure rolls back when `undo_on_failure` (the commit's own
/// process: it knows what failed); a recovery stops instead and keeps the
/// journal (the staged volumes may be the only copy of the new data, and
/// the cause, a full disk or a reader holding metadata.db, may pass).
pub fn settle(
    root: &DataRoot,
    staging: &Path,
    journal: &mut Journal,
    mut db: Option<&mut DbWriteLock>,
    undo_on_failure: bool,
) -> Result<Settled, Unsettled> {
    let journal_err = |e: JournalError| Unsettled {
        forward: None,
        backward: Some(Box::new(e.into())),
    };
    if journal.state == State::Committing {
        match forward(root, staging, journal, db.as_deref_mut()) {
            Ok(()) => {
                journal.state = State::Committed;
                // Every step is done. A journal that still says
                // `committing` on disk costs only a second forward pass of
                // no-ops, and keeps its staging from being removed.
                let _ = journal.save(staging);
                return Ok(Settled::Committed);
            }
            Err(failed) if !undo_on_failure => {
                return Err(Unsettled {
                    forward: Some(Box::new(failed)),
                    backward: None,
                })
            }
            Err(failed) => {
                journal.state = State::RollingBack;
                let _ = journal.save(staging);
                if let Err(undo) = backward(root, staging, journal, db) {
                    return Err(Unsettled {
                        forward: Some(Box::new(failed)),
                        backward: Some(Box::new(undo)),
                    });
                }
                Journal::remove(staging).map_err(journal_err)?;
                return Err(Unsettled {
                    forward: Some(Box::new(failed)),
                    backward: None,
                });
            }
        }
    }
    if journal.state == State::RollingBack {
        backward(root, staging, journal, db).map_err(|undo| Unsettled {
            forward: None,
            backward: Some(Box::new(undo)),
        })?;
        Journal::remove(staging).map_err(journal_err)?;
        return Ok(Settled::RolledBack);
    }
    Ok(Settled::Committed)
}

/// After `committed`: points the carried containers' volume Sources at
/// this data-root. Returns the configs rewritten, and the failures (each
/// with its path: the volumes are in place, the config is not edited).
pub fn rewrite_configs(root: &DataRoot, journal: &Journal) -> (Vec<String>, Vec<String>) {
    let names: Vec<&str> = journal.volumes.iter().map(String::as_str).collect();
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for id in &journal.rewrite_configs {
        let path = root.container_config(id);
        match config_rewrite::point_sources_at(root, &path, &names) {
            Ok(true) => done.push(path.display().to_string()),
            Ok(false) => {}
            Err(e) => failed.push(format!("cannot rewrite `{}`: {e}", path.display())),
        }
    }
    (done, failed)
}

/// Removes a staging directory, the journal last: a crash meanwhile
/// leaves a staging directory without a journal, which holds nothing but
/// copies (and, after `committed`, replaced volumes no longer wanted).
pub fn remove_staging(staging: &Path) -> Result<(), StepError> {
    // # Safety of data
    // A journal still committing or rolling back means the staging holds
    // what the commit needs: the new volumes, or replaced ones.
    if super::delta::journal_applying(staging) == Some(true) {
        return Err(StepError::Io {
            path: staging.to_path_buf(),
            source: io::Error::other(
                "holds an interrupted delta's journal and undo data: kept; run `volmig recover`",
            ),
        });
    }
    if let Some(j) = Journal::load(staging)? {
        if j.state != State::Committed {
            return Err(StepError::Io {
                path: staging.to_path_buf(),
                source: io::Error::other(
                    "holds an unfinished commit's journal: kept; run `volmig recover`",
                ),
            });
        }
    }
    // Staged beside bind targets: the new data (not committed) or the
    // directory it replaced (committed).
    let outside = super::journal::load_outside(staging).map_err(io_at(staging))?;
    for dir in outside
        .iter()
        .flat_map(|d| [d.clone(), super::journal::bind_aside(d)])
    {
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&dir)(e)),
            _ => {}
        }
    }
    for sub in ["replaced", "volumes", "containers"] {
        let dir = staging.join(sub);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_at(&dir)(e)),
            _ => {}
        }
    }
    match fs::remove_dir_all(staging) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(staging)(e)),
        _ => {
            if let Some(parent) = staging.parent() {
                // The staging root goes once empty; another import's
                // directory in it keeps it (ENOTEMPTY is fine).
                let _ = fs::remove_dir(parent);
            }
            Ok(())
        }
    }
}

/// What a recovery did with one staging directory.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub staging: PathBuf,
    pub outcome: RecoveryOutcome,
}

#[derive(Debug, Clone)]
pub enum RecoveryOutcome {
    /// An interrupted commit was carried to its end.
    Finished {
        journal: Box<Journal>,
        rewritten: Vec<String>,
        /// What is left to do by hand, each with how.
        pending: Vec<String>,
    },
    /// A failed commit was undone: the target is as before that import.
    RolledBack { journal: Box<Journal> },
    /// Staging of an import that died before its commit: only copies of
    /// a bundle, removed.
    RemovedLeftover { bytes: u64 },
    /// A delta import interrupted while applying (rolled back) or after
    /// (finished).
    Delta(super::delta::DeltaRecovery),
}

#[derive(Debug, thiserror::Error)]
#[error("an interrupted import in `{staging}` could not be recovered: {source}")]
pub struct RecoverError {
    pub staging: PathBuf,
    #[source]
    pub source: StepError,
    /// What the recoveries of the other staging directories did.
    pub done: Vec<Recovered>,
}

/// Staging directories under the data-root (not following symlinks).
pub fn staging_dirs(root: &DataRoot) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(root.staging_dir()) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Bytes under a directory (allocated blocks), not following symlinks.
pub fn tree_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Finishes or rolls back every interrupted import of the data-root, and
/// removes the staging of imports that died before committing. The caller
/// holds the import lock, so every staging directory is a dead import's.
/// One directory that cannot be recovered does not keep the others from
/// it; its error comes after all were tried.
pub fn recover_all(root: &DataRoot) -> Result<Vec<Recovered>, RecoverError> {
    let mut done = Vec::new();
    let mut failed = None;
    for staging in staging_dirs(root) {
        match recover_one(root, &staging) {
            Ok(outcome) => done.push(Recovered { staging, outcome }),
            Err(source) => {
                failed.get_or_insert((staging, source));
            }
        }
    }
    match failed {
        None => Ok(done),
        Some((staging, source)) => Err(RecoverError {
            staging,
            source,
            done,
        }),
    }
}

fn recover_one(root: &DataRoot, staging: &Path) -> Result<RecoveryOutcome, StepError> {
    if super::delta::has_journal(staging) {
        return super::delta::recover(root, staging)
            .map(RecoveryOutcome::Delta)
            .map_err(|why| StepError::Delta {
                staging: staging.to_path_buf(),
                why,
            });
    }
    let Some(mut journal) = Journal::load(staging)? else {
        let bytes = tree_bytes(staging);
        remove_staging(staging)?;
        return Ok(RecoveryOutcome::RemovedLeftover { bytes });
    };
    // The import wrote metadata.db and edits configs: dockerd must stay
    // stopped for all of it, so the database is held throughout.
    let mut db = match &journal.metadata {
        Some(_) => Some(take_db(root)?),
        None => None,
    };
    match settle(root, staging, &mut journal, db.as_mut(), false) {
        Ok(Settled::Committed) => {}
        Ok(Settled::RolledBack) => {
            drop(db);
            remove_staging(staging)?;
            return Ok(RecoveryOutcome::RolledBack {
                journal: Box::new(journal),
            });
        }
        Err(Unsettled { forward, backward }) => {
            return Err(forward.or(backward).map_or(
                StepError::Lost {
                    what: "the commit".into(),
                    target: staging.to_path_buf(),
                    why: "it could not be settled",
                },
                |e| *e,
            ))
        }
    }
    let (rewritten, mut pending) = rewrite_configs(root, &journal);
    drop(db);
    if journal.live {
        pending.push(format!(
            "the volumes were moved into `{}` while dockerd ran: it does not know them until it restarts (systemctl restart docker)",
            root.volumes_dir().display()
        ));
    }
    remove_staging(staging)?;
    Ok(RecoveryOutcome::Finished {
        journal: Box::new(journal),
        rewritten,
        pending,
    })
}

/// An interrupted import found by `pending`, for scan and verify to report.
#[derive(Debug, Clone)]
pub struct Pending {
    pub staging: PathBuf,
    /// `None`: staging without a journal (died before its commit).
    pub state: Option<State>,
    pub bytes: u64,
}

/// The interrupted imports and leftover staging of a data-root, read only.
pub fn pending(root: &DataRoot) -> Vec<Pending> {
    staging_dirs(root)
        .into_iter()
        .map(|staging| Pending {
            state: match super::delta::journal_applying(&staging) {
                Some(true) => Some(State::Committing),
                Some(false) => Some(State::Committed),
                None => Journal::load(&staging).ok().flatten().map(|j| j.state),
            },
            bytes: tree_bytes(&staging),
            staging,
        })
        .collect()
}

/// What `scan` and `verify` say about interrupted imports and leftover
/// staging, each with the command that settles it. Read only.
pub fn pending_findings(root: &DataRoot) -> Vec<Finding> {
    let running = super::lock::is_held(&root.import_lock());
    pending(root)
        .into_iter()
        .map(|p| {
            let at = p.staging.display();
            match (p.state, running) {
                (_, true) => Finding::new(
                    Severity::Info,
                    FindingKind::ImportRunning,
                    format!("an import into this data-root is running (staging `{at}`)"),
                    "wait for it to finish before starting dockerd",
                ),
                (Some(State::Committing | State::RollingBack), false) => Finding::new(
                    Severity::Error,
                    FindingKind::ImportInterrupted,
                    format!("an import was interrupted in its commit (journal in `{at}`): some of its volumes or labels may not be in place yet"),
                    "run `volmig recover` before starting dockerd: it finishes (or undoes) the commit",
                ),
                (Some(State::Committed), false) => Finding::new(
                    Severity::Warning,
                    FindingKind::ImportUnfinished,
                    format!("an import committed but did not finish rewriting container configs or removing staging (`{at}`, {} bytes)", p.bytes),
                    "run `volmig recover`: it finishes the import",
                ),
                (None, false) => Finding::new(
                    Severity::Warning,
                    FindingKind::StagingLeftover,
                    format!("`{at}` holds {} bytes of an import that died before its commit (copies of a bundle only)", p.bytes),
                    "run `volmig recover` to remove it",
                ),
            }
        })
        .collect()
}
