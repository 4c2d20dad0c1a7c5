//! The staging side of a base: each volume data entry's record, as it is
//! laid down, spooled to an unlinked file in the staging directory in
//! bundle order (itself a manifest stream, so that memory does not grow
//! with the entries), with each volume's tree digest as the bundle has
//! it. Never fails the import: a spool that cannot be written stops and
//! says why after the commit.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::base_header;
use crate::bundle::{layout, EntryKind, EntryMeta};
use crate::manifest::{self, Chunked, Entry, ManifestError, ManifestWriter, TreeDigest};

/// The staging side: the spool of the volume data entries staged.
pub(in crate::import) struct BaseSpool {
    /// `Err`: why spooling stopped (the import goes on without a base).
    state: Result<Spooling, String>,
}

struct Spooling {
    /// Names the spool in messages (the file itself is unlinked).
    path: PathBuf,
    writer: ManifestWriter,
    /// The same open file, to read the spool back.
    read_back: File,
    /// The volume whose entries are being spooled, and the tree digest
    /// of its entries as the bundle has them.
    current: Option<(String, TreeDigest)>,
    /// Each volume spooled: its tree digest, as the bundle has it.
    trees: BTreeMap<String, String>,
    /// The chunk digests of the large file just staged, for its record.
    chunked: Option<Chunked>,
    /// The entry just staged as it was laid down, when that differs from
    /// the bundle's (ids shifted for a remapped target).
    laid: Option<EntryMeta>,
}

impl BaseSpool {
    /// Starts a spool in `staging` for round `round` (a spool that cannot
    /// be created only means no base: it says why after the commit).
    pub(in crate::import) fn start(staging: &Path, round: &str) -> BaseSpool {
        let path = staging.join("(base spool)");
        let start = || -> Result<Spooling, String> {
            let file = tempfile::tempfile_in(staging)
                .map_err(|e| format!("no spool in `{}`: {e}", staging.display()))?;
            let read_back = file
                .try_clone()
                .map_err(|e| format!("no spool in `{}`: {e}", staging.display()))?;
            let writer = ManifestWriter::new(file, &path, &base_header(round, Path::new(""), None))
                .map_err(|e| e.to_string())?;
            Ok(Spooling {
                path: path.clone(),
                writer,
                read_back,
                current: None,
                trees: BTreeMap::new(),
                chunked: None,
                laid: None,
            })
        };
        BaseSpool { state: start() }
    }

    /// Whether a large file's chunk digests are wanted (computed while it
    /// is staged): only while spooling, and only for more than one chunk.
    pub(in crate::import) fn wants_chunks(&self, meta: &EntryMeta) -> bool {
        self.state.is_ok() && meta.kind == EntryKind::File && meta.size > manifest::CHUNK
    }

    /// The chunk digests of the file staged last (`wants_chunks`).
    pub(in crate::import) fn set_chunked(&mut self, chunked: Chunked) {
        if let Ok(s) = &mut self.state {
            s.chunked = Some(chunked);
        }
    }

    /// The entry staged last as it was laid down, when that is not as the
    /// bundle has it (ids shifted for a remapped target).
    pub(in crate::import) fn set_laid(&mut self, laid: EntryMeta) {
        if let Ok(s) = &mut self.state {
            s.laid = Some(laid);
        }
    }

    /// Spools one entry of volume `name`'s data at `rel` (relative to
    /// `_data`): `meta` as the bundle has it (the one just staged, with
    /// what `set_chunked` and `set_laid` said of it), `digest` a regular
    /// file's SHA-256.
    pub(in crate::import) fn add(
        &mut self,
        name: &str,
        rel: &[u8],
        meta: &EntryMeta,
        digest: Option<&[u8; 32]>,
    ) {
        let Ok(s) = &mut self.state else { return };
        if let Err(why) = s.add(name, rel, meta, digest) {
            self.state = Err(why);
        }
    }

    /// Ends the spool: the file to read it back from, and each volume's
    /// tree digest as the bundle has it.
    pub(super) fn finish(self) -> Result<(PathBuf, File, BTreeMap<String, String>), String> {
        let mut s = self.state?;
        s.close_volume().map_err(|e| e.to_string())?;
        let path = s.path.clone();
        s.writer.into_file().map_err(|e| e.to_string())?;
        s.read_back
            .seek(SeekFrom::Start(0))
            .map_err(|e| format!("cannot read back `{}`: {e}", path.display()))?;
        Ok((path, s.read_back, s.trees))
    }
}

impl Spooling {
    fn add(
        &mut self,
        name: &str,
        rel: &[u8],
        meta: &EntryMeta,
        digest: Option<&[u8; 32]>,
    ) -> Result<(), String> {
        if self.current.as_ref().is_none_or(|(v, _)| v != name) {
            self.close_volume().map_err(|e| e.to_string())?;
            self.writer.volume(name).map_err(|e| e.to_string())?;
            self.current = Some((name.to_string(), TreeDigest::default()));
        }
        let content = match (self.chunked.take(), digest) {
            (Some(c), _) => Some(c),
            // One chunk or less: the content digest is the SHA-256.
            (None, Some(d)) => Some(Chunked {
                content: *d,
                chunks: Vec::new(),
                recorded: true,
            }),
            (None, None) => None,
        };
        let entry = |m: &EntryMeta| -> Result<Entry, String> {
            let mut e = Entry::from_meta(rel, m, content.clone());
            if m.kind == EntryKind::Hardlink {
                // A bundle path: the manifest's are `_data`-relative, as
                // export writes them. The reader checked that it is an
                // earlier entry of the same volume.
                let prefix = format!("{}/", layout::volume_data(name));
                let link = e.link.as_deref().unwrap_or_default();
                let Some(inside) = link.strip_prefix(prefix.as_bytes()) else {
                    return Err(format!(
                        "the hardlink `{}` leaves its volume",
                        String::from_utf8_lossy(&m.path)
                    ));
                };
                e.link = Some(inside.to_vec());
            }
            Ok(e)
        };
        let as_bundled = entry(meta)?;
        if let Some((_, tree)) = &mut self.current {
            tree.add(&as_bundled);
        }
        let written = match self.laid.take() {
            Some(laid) => self.writer.entry(&entry(&laid)?),
            None => self.writer.entry(&as_bundled),
        };
        written.map_err(|e| e.to_string())
    }

    fn close_volume(&mut self) -> Result<(), ManifestError> {
        if let Some((name, tree)) = self.current.take() {
            let entries = tree.entries();
            let hex = tree.hex();
            self.writer.end(&name, entries, &hex)?;
            self.trees.insert(name, hex);
        }
        Ok(())
    }
}
