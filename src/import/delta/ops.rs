//! The operations a delta makes on its target, and the journal that lists
//! them with what undoes each (`apply`). Paths are `_data`-relative bytes,
//! kept as hex in the journal.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bundle::{hex, unhex, EntryMeta};

pub const JOURNAL_FILE: &str = "delta-journal.json";
const FORMAT: &str = "volmig-delta-journal/1";
/// Largest journal read back (`MAX_OPS` operations fit well below).
const MAX_JOURNAL: u64 = 256 << 20;

/// Owner, mode, mtime and xattrs an entry gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
    /// (name, value), hex.
    pub xattrs: Vec<(String, String)>,
}

impl Attrs {
    pub fn of(meta: &EntryMeta) -> Attrs {
        Attrs {
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: (meta.mtime, meta.mtime_nsec),
            xattrs: meta.xattrs.iter().map(|(n, v)| (hex(n), hex(v))).collect(),
        }
    }

    pub fn of_file(file: &File) -> io::Result<Attrs> {
        let (a, _) = crate::fileattrs::FileAttrs::read_open(file)?;
        Ok(Attrs {
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            mtime: (a.mtime, a.mtime_nsec),
            xattrs: a.xattrs.iter().map(|(n, v)| (hex(n), hex(v))).collect(),
        })
    }

    pub fn xattr_bytes(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.xattrs
            .iter()
            .filter_map(|(n, v)| Some((unhex(n)?, unhex(v)?)))
            .collect()
    }

    /// Applies them to an open file or directory.
    pub fn restore(&self, file: &File) -> io::Result<()> {
        crate::fileattrs::restore_fd(
            file,
            (self.uid, self.gid, self.mode),
            &self.xattr_bytes(),
            self.mtime,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum OpKind {
    /// The staged entry `staged/<n>` goes to the path; what is there goes
    /// to `undo/<n>`.
    Put,
    /// A directory with these attributes, created when missing (or when
    /// something else is there, which goes to `undo/<n>`).
    Dir { attrs: Attrs },
    /// A hardlink to `target` (hex, `_data`-relative).
    Link { target: String },
    /// The path, and a directory's subtree, goes to `undo/<n>`.
    Delete,
    /// The file is patched in place: the chunks `data` from `staged/<n>`,
    /// `zero` made zeros, cut or grown to `size`, then `attrs`.
    Patch {
        size: u64,
        data: Vec<(u64, u64)>,
        zero: Vec<(u64, u64)>,
        attrs: Attrs,
    },
    /// The volume's opts.json is replaced by `staged/<n>`.
    Opts,
}

/// What was at an operation's path before it, recorded before any change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "was", rename_all = "kebab-case")]
pub enum Before {
    Absent,
    /// Moved to `undo/<n>` by the operation (this inode).
    Aside {
        ino: u64,
    },
    /// Changed in place (a directory's attributes, a patched file): its
    /// attributes and size; a patch's old bytes are in `undo/<n>`.
    InPlace {
        attrs: Attrs,
        size: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub vol: String,
    /// `_data`-relative path, hex (empty: `_data` itself).
    pub path: String,
    pub n: u64,
    #[serde(flatten)]
    pub kind: OpKind,
    #[serde(default)]
    pub before: Option<Before>,
    /// The inode of `staged/<n>` (a Put), to tell it at the target.
    #[serde(default)]
    pub staged_ino: Option<u64>,
}

impl Op {
    pub fn new(vol: &str, rel: &[u8], n: u64, kind: OpKind) -> Op {
        Op {
            vol: vol.to_string(),
            path: hex(rel),
            n,
            kind,
            before: None,
            staged_ino: None,
        }
    }

    pub fn rel(&self) -> Vec<u8> {
        unhex(&self.path).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Operations are being carried out: a crash rolls them back.
    Applying,
    /// All were carried out and are durable: a crash finishes the rest
    /// (the new bases move into place).
    Applied,
    /// All were undone: the staging holds nothing anyone needs.
    RolledBack,
}

/// A directory whose mtime the operations move (an entry renamed in or
/// out) and that no operation sets: put back as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touched {
    pub vol: String,
    pub path: String,
    pub mtime: (i64, u32),
}

/// A volume the round adds: built in `added/<vol>` of the staging by its
/// operations, then renamed into `volumes/` whole (dockerd takes every
/// directory there for a volume: never a half-made one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Added {
    pub vol: String,
    /// The inode of the staged volume directory, to tell it in `volumes/`.
    pub ino: u64,
    /// The volume directory's own attributes, as the bundle has them.
    pub attrs: Attrs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaJournal {
    pub format: String,
    pub state: State,
    /// The round the target held, and the round it gets.
    pub base: String,
    pub round: String,
    pub ops: Vec<Op>,
    pub touched: Vec<Touched>,
    /// Volumes new in this round.
    #[serde(default)]
    pub added: Vec<Added>,
    /// The metadata.db records the round writes (labels, driver, options
    /// changed since the base; added volumes), with the target's old ones.
    #[serde(default)]
    pub metadata: Option<crate::import::journal::MetadataPlan>,
}

impl DeltaJournal {
    pub fn new(base: &str, round: &str, ops: Vec<Op>, touched: Vec<Touched>) -> DeltaJournal {
        DeltaJournal {
            format: FORMAT.into(),
            state: State::Applying,
            base: base.into(),
            round: round.into(),
            ops,
            touched,
            added: Vec::new(),
            metadata: None,
        }
    }

    /// Whether `vol` is one the round adds.
    pub fn adds(&self, vol: &str) -> bool {
        self.added.iter().any(|a| a.vol == vol)
    }

    pub fn save(&self, staging: &Path) -> io::Result<()> {
        let text = serde_json::to_vec(self).map_err(io::Error::other)?;
        crate::atomic_file::replace(
            &staging.join(JOURNAL_FILE),
            ".delta-journal.json.tmp",
            &text,
            0o600,
        )
    }

    /// The journal of a staging directory, if it has one.
    pub fn load(staging: &Path) -> io::Result<Option<DeltaJournal>> {
        let path = staging.join(JOURNAL_FILE);
        let file = match File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
            Ok(f) => f,
        };
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() > MAX_JOURNAL {
            return Err(io::Error::other(format!(
                "`{}` is not a regular file of a sane size",
                path.display()
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_JOURNAL).read_to_end(&mut bytes)?;
        let journal: DeltaJournal = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::other(format!("`{}`: {e}", path.display())))?;
        if journal.format != FORMAT {
            return Err(io::Error::other(format!(
                "`{}`: format `{}` is not {FORMAT}: use the volmig that wrote it",
                path.display(),
                journal.format
            )));
        }
        Ok(Some(journal))
    }
}
