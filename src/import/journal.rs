//! The import journal: `<R>/volmig-staging/<id>/journal.json`, written and
//! made durable (file and directory fsynced) before the first change
//! outside the staging directory, and again at each change of state.
//!
//! It records the plan, not the progress: every step of the commit is
//! idempotent and finds out from the filesystem itself (inode numbers
//! recorded here) whether it is done, so a crash between any two system
//! calls leaves a state the next run can carry forward or back.
//!
//! States:
//! - `committing`: staging is complete, verified and durable; a recovery
//!   carries the commit forward (the staged data may be the only copy of
//!   the new volumes: the bundle came through a pipe).
//! - `rolling-back`: the commit failed; a recovery finishes undoing it.
//! - `committed`: every volume and record is in place; what is left is
//!   rewriting container configs and removing staging (and the replaced
//!   volumes kept there).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dataroot::metadata::RecordChange;
use crate::dataroot::DataRoot;

pub const JOURNAL_FILE: &str = "journal.json";
const FORMAT: &str = "volmig-journal/1";
/// Largest journal read back (a plan of 100,000 volumes with their saved
/// records fits well below).
const MAX_JOURNAL: u64 = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Committing,
    RollingBack,
    Committed,
}

/// What a move carries into the data-root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Item {
    Volume {
        name: String,
    },
    Checkpoint {
        container: String,
        name: String,
    },
    /// A bind-type volume's data, laid down at its device path (outside
    /// the data-root): staged beside it, in `staged`, on its filesystem.
    BindData {
        volume: String,
        target: PathBuf,
        staged: PathBuf,
    },
}

/// One directory to move into place: the staged one (inode `new_ino`)
/// becomes the target; with `old_ino`, the target's previous directory is
/// kept aside in staging until the import has committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub item: Item,
    pub new_ino: u64,
    pub old_ino: Option<u64>,
}

/// metadata.db's part of the transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataPlan {
    /// metadata.db as it was (`None`: absent). The commit replaces the
    /// file, so the same file, unchanged, means the commit never got to
    /// it and a rollback has nothing to undo.
    pub orig: Option<FileId>,
    /// The records to write, keyed by volume name (dockerd's JSON).
    pub new: Vec<Record>,
    /// The target's values of the same keys before the import.
    pub saved: Vec<Record>,
}

/// Which file a path names, and whether it changed: the inode alone can
/// be reused by a file created after the original was removed, the inode
/// with its ctime cannot (any write or rename bumps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub ino: u64,
    pub ctime: i64,
    pub ctime_nsec: i64,
}

impl FileId {
    pub fn of(meta: &fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            ino: meta.ino(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    /// dockerd's JSON as text, `None` for "no record".
    pub value: Option<String>,
}

impl Record {
    pub fn from_change((name, value): RecordChange) -> Record {
        Record {
            name,
            value: value.map(|v| String::from_utf8_lossy(&v).into_owned()),
        }
    }

    pub fn to_change(&self) -> RecordChange {
        (
            self.name.clone(),
            self.value.as_ref().map(|v| v.clone().into_bytes()),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub format: String,
    pub state: State,
    /// Which bundle: its source and entries digest, for messages.
    pub bundle: BundleId,
    /// Every volume of the bundle, moved or kept (skip-identical).
    pub volumes: Vec<String>,
    pub moves: Vec<Move>,
    pub metadata: Option<MetadataPlan>,
    /// Containers whose config.v2.json volume Sources are pointed at this
    /// data-root once committed.
    pub rewrite_configs: Vec<String>,
    /// A running dockerd must register the volumes (live import).
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleId {
    pub source_host: String,
    pub source_data_root: String,
    pub entries_sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot write the import journal `{path}`: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read the import journal `{path}`: {reason}; leave the directory as it is and report this (it may hold the only copy of volumes)")]
    Read { path: PathBuf, reason: String },
}

impl Journal {
    pub fn new(bundle: BundleId) -> Journal {
        Journal {
            format: FORMAT.into(),
            state: State::Committing,
            bundle,
            volumes: Vec::new(),
            moves: Vec::new(),
            metadata: None,
            rewrite_configs: Vec::new(),
            live: false,
        }
    }

    /// Writes the journal into `staging` durably: a temp file, fsync,
    /// rename, fsync of the directory. Replaces an earlier state.
    pub fn save(&self, staging: &Path) -> Result<(), JournalError> {
        let path = staging.join(JOURNAL_FILE);
        let fail = |source| JournalError::Write {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| fail(io::Error::other(e)))?;
        crate::atomic_file::replace(&path, ".journal.json.tmp", &text, 0o600).map_err(fail)
    }

    /// Removes the journal durably: the staging directory then holds
    /// nothing anyone needs (a finished rollback).
    pub fn remove(staging: &Path) -> Result<(), JournalError> {
        let path = staging.join(JOURNAL_FILE);
        let fail = |source| JournalError::Write {
            path: path.clone(),
            source,
        };
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(fail(e)),
            _ => {}
        }
        File::open(staging).and_then(|d| d.sync_all()).map_err(fail)
    }

    /// Reads the journal of a staging directory; `Ok(None)` if it has none
    /// (staging never reached its commit: only copies of a bundle).
    pub fn load(staging: &Path) -> Result<Option<Journal>, JournalError> {
        let path = staging.join(JOURNAL_FILE);
        let bad = |reason: String| JournalError::Read {
            path: path.clone(),
            reason,
        };
        let file = match File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(e.to_string())),
            Ok(f) => f,
        };
        let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() || meta.len() > MAX_JOURNAL {
            return Err(bad("not a regular file of a sane size".into()));
        }
        let mut bytes = Vec::new();
        file.take(MAX_JOURNAL)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(e.to_string()))?;
        let journal: Journal = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if journal.format != FORMAT {
            return Err(bad(format!(
                "format `{}` is not {FORMAT}: use the volmig that wrote it",
                journal.format
            )));
        }
        Ok(Some(journal))
    }
}

/// Where a move's directories are.
pub struct MovePaths {
    pub target: PathBuf,
    pub staged: PathBuf,
    pub aside: PathBuf,
}

impl Move {
    pub fn paths(&self, root: &DataRoot, staging: &Path) -> MovePaths {
        self.item.paths(root, staging)
    }
}

impl Item {
    /// Where the item goes, where it is staged, where the directory it
    /// replaces is kept until the commit.
    pub fn paths(&self, root: &DataRoot, staging: &Path) -> MovePaths {
        match self {
            Item::Volume { name } => MovePaths {
                target: root.volume_dir(name),
                staged: staging.join("volumes").join(name),
                aside: staging.join("replaced").join(format!("volume-{name}")),
            },
            Item::Checkpoint { container, name } => MovePaths {
                target: root.checkpoint_dir(container, name),
                staged: staging
                    .join("containers")
                    .join(container)
                    .join("checkpoints")
                    .join(name),
                aside: staging
                    .join("replaced")
                    .join(format!("checkpoint-{container}-{name}")),
            },
            Item::BindData { target, staged, .. } => MovePaths {
                target: target.clone(),
                staged: staged.clone(),
                aside: bind_aside(staged),
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Item::Volume { name } => format!("volume `{name}`"),
            Item::Checkpoint { container, name } => {
                format!("checkpoint `{name}` of container {container}")
            }
            Item::BindData { volume, target, .. } => {
                format!("the data of volume `{volume}` at `{}`", target.display())
            }
        }
    }
}

/// Where a bind target's previous directory is kept until the commit.
pub fn bind_aside(staged: &Path) -> PathBuf {
    let mut name = staged.as_os_str().to_os_string();
    name.push(".replaced");
    PathBuf::from(name)
}

/// `<staging>/outside.json`: the directories this import stages outside
/// the data-root (beside bind targets), written durably before the first
/// of them is created, so that removing the staging removes them too.
pub const OUTSIDE_FILE: &str = "outside.json";

/// The name every directory staged outside the data-root starts with:
/// nothing else is ever removed from there.
pub const OUTSIDE_PREFIX: &str = ".volmig-staging-";

/// Records the directories staged outside (see `OUTSIDE_FILE`).
pub fn save_outside(staging: &Path, dirs: &[PathBuf]) -> io::Result<()> {
    let text = serde_json::to_vec_pretty(dirs).map_err(io::Error::other)?;
    crate::atomic_file::replace(
        &staging.join(OUTSIDE_FILE),
        ".outside.json.tmp",
        &text,
        0o600,
    )
}

/// The directories staged outside, each with its aside; only paths whose
/// name has `OUTSIDE_PREFIX` (a damaged file names nothing else).
pub fn load_outside(staging: &Path) -> io::Result<Vec<PathBuf>> {
    let path = staging.join(OUTSIDE_FILE);
    use crate::dataroot::regular_file::{self, RegularFileError};
    let bytes = match regular_file::read(&path, MAX_JOURNAL) {
        Ok(b) => b,
        Err(RegularFileError::NotFound) => return Ok(Vec::new()),
        Err(e) => return Err(io::Error::other(format!("`{}` {e}", path.display()))),
    };
    let dirs: Vec<PathBuf> = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
    Ok(dirs
        .into_iter()
        .filter(|d| {
            d.is_absolute()
                && d.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(OUTSIDE_PREFIX))
        })
        .collect())
}
