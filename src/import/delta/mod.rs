//! Import of a delta bundle (`volmig export --since`, see
//! `docs/incremental.md`): applied in place onto a target whose volumes
//! are exactly the delta's base round, with work proportional to the
//! delta, and all or nothing.
//!
//! The order, and what a crash at each point leaves:
//! 1. the header's base must be the round every volume holds
//!    (`base::check_rounds`), before anything is written;
//! 2. every entry is staged under `<R>/volmig-staging/<id>-delta/` as the
//!    reader verifies it (`stage`): a crash leaves copies of the bundle
//!    there, which the next run removes;
//! 3. the target must still be exactly its base, entry by entry by stat
//!    (`base::check_target`), and the base merged with the delta must
//!    give the source's tree digest (`base::result_tree`): refused, with
//!    nothing changed, otherwise;
//! 4. what undoes every operation is saved and the journal written
//!    (`apply::prepare`, `ops::DeltaJournal`), then the operations run
//!    (`apply::apply`); a failure rolls them back, and a crash is rolled
//!    back by the next volmig that takes the data-root (`recover`);
//! 5. what landed is checked against the expected tree while the new
//!    base manifests are written into staging; then the journal says
//!    `applied`, and the bases move into place (a crash from here on is
//!    finished, not undone).

mod apply;
pub mod base;
mod new_base;
mod ops;
mod records;
mod stage;

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use self::ops::{DeltaJournal, State};
pub use self::stage::DeltaStager;
use super::ImportError;
use crate::bundle::{BundleHeader, Trailer};
use crate::dataroot::DataRoot;
use crate::interrupt::Critical;

/// Most entries one delta may change: its operations are held in memory
/// (about 400 bytes each). More than this is a round to carry in full.
pub const MAX_OPS: usize = 100_000;

/// What a delta import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeltaOutcome {
    pub base: String,
    pub round: String,
    pub volumes: Vec<String>,
    /// Entries written whole (files, symlinks, nodes, hardlinks).
    pub written: usize,
    pub directories: usize,
    pub patched: usize,
    pub deleted: usize,
    pub options: usize,
    /// Bytes staged (files and patches).
    pub bytes: u64,
    /// Volumes new in this round, added whole.
    pub added: Vec<String>,
    /// metadata.db records written (labels, driver or options changed
    /// since the base round; added volumes).
    pub records: usize,
    /// While dockerd held metadata.db: volumes whose labels, driver or
    /// options changed since the base round (not written), and volumes
    /// whose base does not say.
    pub records_pending: Vec<String>,
    pub records_unknown: Vec<String>,
}

fn refused(why: String) -> ImportError {
    ImportError::Refused(vec![why])
}

/// Steps 3 to 5 of the module doc, for a verified staging.
/// With `dry_run`, steps 3 only: nothing is written.
pub fn commit(
    root: &DataRoot,
    stage: &mut DeltaStager,
    header: &BundleHeader,
    trailer: &Trailer,
    dry_run: bool,
) -> Result<DeltaOutcome, ImportError> {
    let round = header
        .round
        .as_ref()
        .ok_or_else(|| refused("not a delta".into()))?;
    let base_id = round.base.clone().unwrap_or_default();
    check(root, stage, header, trailer)?;
    let mut outcome = summary(stage, header, &base_id, &round.id);
    if dry_run {
        return Ok(outcome);
    }
    let staging = stage
        .dir
        .clone()
        .ok_or_else(|| refused("the delta holds nothing to import".into()))?;
    if let Some(signal) = crate::interrupt::requested() {
        return Err(ImportError::Interrupted { signal });
    }
    let staged = apply::Staging::open(&staging).map_err(refused)?;
    let added = added_volumes(&staged, stage)?;
    // metadata.db is ours from here to the end (or a running dockerd's).
    let mut db = records::take(root).map_err(refused)?;
    let metadata = match &db {
        records::Db::Held(lock) => records::plan(root, lock, &staging, header).map_err(refused)?,
        records::Db::Daemon if !added.is_empty() => {
            return Err(refused(format!(
                "the round adds volume `{}`, and a running dockerd holds {}: stop it (its scan at start then finds the volume), or carry the volume in a full bundle",
                added[0].vol,
                root.metadata_db().display()
            )))
        }
        records::Db::Daemon => None,
    };
    let touched = apply::prepare(root, &staged, &added, &mut stage.ops).map_err(refused)?;
    let mut journal =
        DeltaJournal::new(&base_id, &round.id, std::mem::take(&mut stage.ops), touched);
    outcome.records = metadata.as_ref().map_or(0, |m| m.new.len());
    if let records::Db::Daemon = db {
        (outcome.records_pending, outcome.records_unknown) = records::unwritable(root, header);
    }
    let base_records = records::for_bases(root, header, &db);
    journal.added = added;
    journal.metadata = metadata;
    let dir = File::open(&staging).map_err(super::werr(&staging))?;
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))
        .map_err(|e| super::werr(&staging)(e.into()))?;
    // From the journal on, a signal waits for the end, and the staging
    // is the journal's: removed here once settled, else kept for
    // `volmig recover` (never discarded by the caller).
    let critical = Critical::enter();
    stage.dir = None;
    let applied = journal
        .save(&staging)
        .map_err(|e| format!("{}: {e}", staging.display()))
        .and_then(|()| match (&journal.metadata, &mut db) {
            (Some(plan), records::Db::Held(lock)) => records::write(lock, &staging, plan),
            _ => Ok(()),
        })
        .and_then(|()| apply::apply(root, &staged, &journal))
        .and_then(|()| {
            new_base::write_bases(
                root,
                &staging,
                header,
                &journal,
                &stage.new,
                &stage.patch_chunks,
                &base_records,
            )
        })
        .and_then(|()| {
            journal.state = State::Applied;
            journal.save(&staging).map_err(|e| e.to_string())
        });
    if let Err(failed) = applied {
        return Err(undo(root, &staged, &mut journal, &mut db, staging, failed));
    }
    if let Err(failed) = finish(root, &staging) {
        return Err(ImportError::DeltaUnsettled {
            why: format!(
                "the delta was applied, but finishing it failed ({failed}): the journal in `{}` keeps what is left to do (the new bases into place); fix the cause, then run `volmig recover`",
                staging.display()
            ),
            staging,
        });
    }
    drop(db);
    drop(critical);
    Ok(outcome)
}

/// The volumes the round adds, as the journal lists them: each staged
/// volume directory, which the bundle must have described.
fn added_volumes(
    staged: &apply::Staging,
    stage: &DeltaStager,
) -> Result<Vec<ops::Added>, ImportError> {
    let mut added = Vec::new();
    for (vol, attrs) in &stage.added {
        let attrs = attrs.clone().ok_or_else(|| {
            refused(format!(
                "the delta adds volume `{vol}` without its directory (`volumes/{vol}`): it was not written by volmig export --since"
            ))
        })?;
        let dir = staged.added_dir(vol);
        let ino = fs::symlink_metadata(&dir).map_err(super::werr(&dir))?.ino();
        added.push(ops::Added {
            vol: vol.clone(),
            ino,
            attrs,
        });
    }
    Ok(added)
}

/// Step 3: the target is exactly the base, and the base merged with the
/// delta gives the source's tree, volume by volume; nothing is written.
fn check(
    root: &DataRoot,
    stage: &DeltaStager,
    header: &BundleHeader,
    trailer: &Trailer,
) -> Result<(), ImportError> {
    let trees = trailer.trees.as_ref().ok_or_else(|| {
        refused(
            "the delta's trailer has no tree digests: it was not written by export --since".into(),
        )
    })?;
    for v in &header.volumes {
        let adds = stage.added.contains_key(&v.name);
        match adds {
            // Still absent (it was at the header): only ever renamed in.
            true if root.volume_dir(&v.name).symlink_metadata().is_ok() => {
                return Err(refused(format!(
                    "volume `{}` appeared on the target during the import: a delta adds a volume only where there is none",
                    v.name
                )))
            }
            _ => {}
        }
        // For a volume of the target, also the check that it is still
        // exactly its base (`base::check_target`), in the same pass.
        let ops: Vec<&ops::Op> = stage.ops.iter().filter(|o| o.vol == v.name).collect();
        let tree = base::result_tree(root, &v.name, adds, &ops, &stage.new, &stage.patch_chunks)
            .map_err(refused)?;
        if trees.get(&v.name) == Some(&tree) {
            continue;
        }
        return Err(refused(match adds {
            true => format!(
                "volume `{}` is not on the target, and this delta does not carry it whole (it changed since a round the target never got): import that round's full bundle first",
                v.name
            ),
            false => format!(
                "volume `{}` would not be the source's once this delta is applied (its tree digest differs): the target is not the delta's base; import a full bundle",
                v.name
            ),
        }));
    }
    Ok(())
}

/// A failure from the journal on: the journal is made to say `applying`
/// again if it said more, everything is undone, and the error says what
/// became of the target (rolled back, or left to `volmig recover`).
fn undo(
    root: &DataRoot,
    staged: &apply::Staging,
    journal: &mut DeltaJournal,
    db: &mut records::Db,
    staging: std::path::PathBuf,
    failed: String,
) -> ImportError {
    if journal.state == State::Applied {
        // Its save failed, maybe after its rename: the journal must
        // say `applying` again before anything is undone.
        journal.state = State::Applying;
        if let Err(again) = journal.save(&staging) {
            return ImportError::DeltaUnsettled {
                why: format!(
                    "the delta was applied, but its journal could not say so ({failed}; {again}): the journal in `{}` keeps what is needed; fix the cause, then run `volmig recover`",
                    staging.display()
                ),
                staging,
            };
        }
    }
    let undone = rollback(root, staged, journal, db).and_then(|()| {
        journal.state = State::RolledBack;
        journal.save(&staging).map_err(|e| e.to_string())
    });
    match undone {
        Ok(()) => {
            let left = match super::commit::remove_staging(&staging) {
                Ok(()) => String::new(),
                Err(e) => format!(" (its staging is left: {e}; `volmig recover` removes it)"),
            };
            refused(format!("the delta could not be applied ({failed}); everything was rolled back and the target is as it was{left}"))
        }
        Err(rollback) => ImportError::DeltaUnsettled {
            why: format!(
                "the delta could not be applied ({failed}), and undoing it failed ({rollback}): the journal in `{}` keeps what is needed; fix the cause, then run `volmig recover`",
                staging.display()
            ),
            staging,
        },
    }
}

/// Undoes the operations, then the records (written first).
fn rollback(
    root: &DataRoot,
    staged: &apply::Staging,
    journal: &DeltaJournal,
    db: &mut records::Db,
) -> Result<(), String> {
    apply::rollback(root, staged, journal)?;
    match (&journal.metadata, db) {
        (Some(plan), records::Db::Held(lock)) => records::undo(root, lock, &staged.dir, plan),
        (Some(_), records::Db::Daemon) => Err(format!(
            "a running dockerd holds {}: its records cannot be put back; stop it, then run `volmig recover`",
            root.metadata_db().display()
        )),
        (None, _) => Ok(()),
    }
}

fn summary(stage: &DeltaStager, header: &BundleHeader, base: &str, round: &str) -> DeltaOutcome {
    let mut o = DeltaOutcome {
        base: base.into(),
        round: round.into(),
        volumes: header.volumes.iter().map(|v| v.name.clone()).collect(),
        added: stage.added.keys().cloned().collect(),
        bytes: stage.data_bytes,
        ..Default::default()
    };
    for op in &stage.ops {
        match op.kind {
            ops::OpKind::Put | ops::OpKind::Link { .. } => o.written += 1,
            ops::OpKind::Dir { .. } => o.directories += 1,
            ops::OpKind::Patch { .. } => o.patched += 1,
            ops::OpKind::Delete => o.deleted += 1,
            ops::OpKind::Opts => o.options += 1,
        }
    }
    o
}

/// The last step of an applied delta (idempotent): the new bases into
/// place, staging removed.
fn finish(root: &DataRoot, staging: &Path) -> Result<(), String> {
    let from = staging.join("bases");
    let to = root.bases_dir();
    fs::create_dir_all(&to).map_err(|e| format!("{}: {e}", to.display()))?;
    if let Ok(entries) = fs::read_dir(&from) {
        for e in entries.flatten() {
            fs::rename(e.path(), to.join(e.file_name()))
                .map_err(|err| format!("{}: {err}", to.display()))?;
        }
    }
    File::open(&to)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", to.display()))?;
    super::commit::remove_staging(staging).map_err(|e| e.to_string())
}

/// What recovery did with an interrupted delta import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaRecovery {
    RolledBack { base: String, round: String },
    Finished { base: String, round: String },
}

/// Whether `staging` is a delta import's with a journal.
pub fn has_journal(staging: &Path) -> bool {
    staging.join(ops::JOURNAL_FILE).exists()
}

/// Rolls back (while applying) or finishes (once applied) the delta
/// import interrupted in `staging`.
pub fn recover(root: &DataRoot, staging: &Path) -> Result<DeltaRecovery, String> {
    let journal = DeltaJournal::load(staging)
        .map_err(|e| e.to_string())?
        .ok_or("no journal")?;
    let (base, round) = (journal.base.clone(), journal.round.clone());
    let mut journal = journal;
    match journal.state {
        State::Applying => {
            let staged = apply::Staging::open(staging)?;
            let mut db = match journal.metadata {
                Some(_) => records::take(root)?,
                None => records::Db::Daemon,
            };
            rollback(root, &staged, &journal, &mut db)?;
            journal.state = State::RolledBack;
            journal.save(staging).map_err(|e| e.to_string())?;
            super::commit::remove_staging(staging).map_err(|e| e.to_string())?;
            Ok(DeltaRecovery::RolledBack { base, round })
        }
        State::RolledBack => {
            super::commit::remove_staging(staging).map_err(|e| e.to_string())?;
            Ok(DeltaRecovery::RolledBack { base, round })
        }
        State::Applied => {
            finish(root, staging)?;
            Ok(DeltaRecovery::Finished { base, round })
        }
    }
}

/// Whether `staging` holds a delta journal that still needs its undo
/// data: one interrupted while applying (`None`: no delta journal).
pub fn journal_applying(staging: &Path) -> Option<bool> {
    match DeltaJournal::load(staging) {
        Ok(Some(j)) => Some(j.state == State::Applying),
        Ok(None) => None,
        // Unreadable: kept, as if it needed everything.
        Err(_) => Some(true),
    }
}
