//! A manifest recovered from a full bundle (`volmig inspect --manifest`),
//! for when the `--manifest-out` file of its export was lost.
//!
//! Every `_data` entry is described from what the bundle carries: its
//! attributes from the tar header and PAX records, a regular file's
//! content digest (and chunk digests) from the bytes read from the
//! stream, holes as zeros. Read through `bundle::reader` with every digest
//! checked, so the manifest describes exactly what the trailer vouches
//! for: the file is written beside its final name (`FILE.partial`) and
//! renamed into place only once the trailer and the volumes' tree digests
//! matched; on any failure the partial file is removed.
//!
//! A bundle does not carry the source's ctime and inode, so the entries
//! have none (`Entry::same_stat` is then false: a later `export --since`
//! re-hashes every file instead of trusting its stat).
//!
//! Memory: one entry at a time, plus each volume's name and tree digest.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::{ChunkHasher, Chunked, Entry, ManifestError, ManifestHeader, ManifestWriter};
use super::{TreeDigest, CHUNK, FORMAT};
use crate::bundle::layout;
use crate::bundle::reader::{self, io_error, Check, ReadError, Visitor};
use crate::bundle::{BundleHeader, EntryKind, EntryMeta, Place, Trailer};
use crate::progress::Progress;

/// What the manifest says about one volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeTree {
    pub name: String,
    /// `_data` entries (`_data` itself included).
    pub entries: u64,
    /// The tree digest (`super::TreeDigest`).
    pub tree: String,
}

/// A manifest written from a bundle.
#[derive(Debug)]
pub struct Recovered {
    pub header: BundleHeader,
    pub trailer: Trailer,
    /// The manifest's `bundle`: the bundle's round id.
    pub round: String,
    /// In bundle order.
    pub volumes: Vec<VolumeTree>,
    /// Whether the trailer had tree digests to check them against.
    pub trees_checked: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FromBundleError {
    #[error("the bundle has no round id (it was exported without --manifest-out): a delta names its base by that id, so no delta could be made against a manifest of this bundle; export it again with --manifest-out")]
    NoRound,
    #[error("the bundle is a delta (round {id}, onto round {base}): it carries only what changed, not the whole tree a manifest describes; make the manifest from the newest full bundle, or use the manifest its `export --manifest-out` wrote")]
    Delta { id: String, base: String },
    /// The bundle failed its checks (or could not be read).
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The trees computed from the entries differ from the trailer's.
    #[error("volume `{volume}`: {detail}: the trailer was altered or was written by a different volmig (no manifest written)")]
    Tree { volume: String, detail: String },
}

impl FromBundleError {
    /// Whether the bundle itself is broken (`inspect --check` would
    /// exit 1), as opposed to a bundle that cannot be used or read.
    pub fn bundle_is_broken(&self) -> bool {
        matches!(
            self,
            FromBundleError::Read(
                ReadError::Corrupt(_) | ReadError::Truncated(_) | ReadError::Hostile { .. }
            ) | FromBundleError::Tree { .. }
        )
    }
}

/// `FILE.partial`, beside `FILE`.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

/// Reads the bundle on `input` with every digest checked and writes the
/// manifest of its volumes to `path` (through `partial_path(path)`,
/// renamed at the end). Nothing is left at either name on failure.
pub fn write_manifest(
    input: Box<dyn Read>,
    path: &Path,
    progress: &dyn Progress,
) -> Result<Recovered, FromBundleError> {
    let partial = Partial {
        path: partial_path(path),
        created: false,
    };
    let mut recorder = Recorder {
        partial,
        out: None,
        current: None,
        volumes: Vec::new(),
        scratch: vec![0u8; crate::bundle::IO_CHUNK],
        round: String::new(),
        failed: None,
    };
    let read = reader::read(input, &mut recorder, progress, Check::Content);
    let (header, trailer) = match read {
        Ok(read) => read,
        // The visitor's own error, with its type, rather than its text.
        Err(e) => return Err(recorder.failed.take().unwrap_or(e.into())),
    };
    recorder.close()?;
    let Recorder {
        mut partial,
        out,
        volumes,
        round,
        ..
    } = recorder;
    let out = out.ok_or(FromBundleError::NoRound)?;
    out.finish()?;
    let trees_checked = check_trees(&volumes, &trailer)?;
    partial.commit(path)?;
    Ok(Recovered {
        header,
        trailer,
        round,
        volumes,
        trees_checked,
    })
}

/// The trees computed against the trailer's, when it has them; every
/// volume on either side must have its equal on the other.
fn check_trees(volumes: &[VolumeTree], trailer: &Trailer) -> Result<bool, FromBundleError> {
    let Some(trees) = &trailer.trees else {
        return Ok(false);
    };
    for v in volumes {
        match trees.get(&v.name) {
            Some(t) if *t == v.tree => {}
            Some(t) => {
                return Err(FromBundleError::Tree {
                    volume: v.name.clone(),
                    detail: format!(
                        "its entries have tree digest {}, the trailer says {t}",
                        v.tree
                    ),
                })
            }
            None => {
                return Err(FromBundleError::Tree {
                    volume: v.name.clone(),
                    detail: "the trailer has no tree digest for it".into(),
                })
            }
        }
    }
    if let Some(extra) = trees
        .keys()
        .find(|k| !volumes.iter().any(|v| &v.name == *k))
    {
        return Err(FromBundleError::Tree {
            volume: extra.clone(),
            detail: "the trailer has a tree digest for it, but the bundle carries none of its data"
                .into(),
        });
    }
    Ok(true)
}

/// The partial file: removed when dropped unless renamed into place.
struct Partial {
    path: PathBuf,
    created: bool,
}

impl Partial {
    fn commit(&mut self, to: &Path) -> Result<(), ManifestError> {
        let failed = |source| ManifestError::Write {
            path: to.to_path_buf(),
            source,
        };
        std::fs::rename(&self.path, to).map_err(failed)?;
        self.created = false;
        // The rename itself durable, as the file already is.
        let dir = match to.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(failed)
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The visitor: one manifest entry per `_data` entry, as it passes.
struct Recorder {
    partial: Partial,
    out: Option<ManifestWriter>,
    /// The volume whose entries are being written, and its digest so far.
    current: Option<(String, TreeDigest)>,
    volumes: Vec<VolumeTree>,
    scratch: Vec<u8>,
    round: String,
    /// The error behind a `ReadError::Visitor` returned to the reader.
    failed: Option<FromBundleError>,
}

impl Recorder {
    /// Keeps `e` and hands the reader its text (it stops the read).
    fn fail(&mut self, e: FromBundleError) -> ReadError {
        let text = e.to_string();
        self.failed = Some(e);
        ReadError::Visitor(text)
    }

    /// Ends the current volume.
    fn close(&mut self) -> Result<(), ManifestError> {
        if let Some((name, tree)) = self.current.take() {
            let entries = tree.entries();
            let tree = tree.hex();
            if let Some(out) = &mut self.out {
                out.end(&name, entries, &tree)?;
            }
            self.volumes.push(VolumeTree {
                name,
                entries,
                tree,
            });
        }
        Ok(())
    }

    fn record(&mut self, volume: &str, entry: &Entry) -> Result<(), ManifestError> {
        if self.current.as_ref().is_none_or(|(v, _)| v != volume) {
            self.close()?;
            if let Some(out) = &mut self.out {
                out.volume(volume)?;
            }
            self.current = Some((volume.to_string(), TreeDigest::default()));
        }
        if let Some((_, tree)) = &mut self.current {
            tree.add(entry);
        }
        if let Some(out) = &mut self.out {
            out.entry(entry)?;
        }
        Ok(())
    }
}

impl Visitor for Recorder {
    fn header(&mut self, header: &BundleHeader) -> Result<(), ReadError> {
        let round = match &header.round {
            None => return Err(self.fail(FromBundleError::NoRound)),
            Some(r) => r,
        };
        if let Some(base) = &round.base {
            let e = FromBundleError::Delta {
                id: round.id.clone(),
                base: base.clone(),
            };
            return Err(self.fail(e));
        }
        self.round = round.id.clone();
        let manifest_header = ManifestHeader {
            format: FORMAT.into(),
            chunk_size: CHUNK,
            bundle: round.id.clone(),
            side: "bundle".into(),
            host: header.source_host.clone(),
            data_root: header.source_data_root.clone(),
            record: None,
        };
        let file = match File::create(&self.partial.path) {
            Ok(file) => file,
            Err(source) => {
                let path = self.partial.path.clone();
                return Err(self.fail(ManifestError::Write { path, source }.into()));
            }
        };
        self.partial.created = true;
        match ManifestWriter::new(file, &self.partial.path, &manifest_header) {
            Ok(out) => {
                self.out = Some(out);
                Ok(())
            }
            Err(e) => Err(self.fail(e.into())),
        }
    }

    fn entry(
        &mut self,
        _: &BundleHeader,
        meta: &EntryMeta,
        place: Place<'_>,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        if meta.delta.is_some() {
            // A deletion or a patch describes no entry of a tree (import
            // refuses it in a full bundle too).
            return Err(ReadError::Hostile {
                entry: String::from_utf8_lossy(&meta.path).into_owned(),
                reason: "a delta's entry in a bundle that is no delta".into(),
            });
        }
        let Place::VolumeData { name, rel } = place else {
            // The reader drains and checks what is not read here.
            return Ok(());
        };
        let chunked = match meta.kind {
            EntryKind::File => Some(content(meta, data, &mut self.scratch)?),
            _ => None,
        };
        let mut entry = Entry::from_meta(rel, meta, chunked);
        if meta.kind == EntryKind::Hardlink {
            // A bundle path (the reader checked it lies in this volume's
            // `_data`): the manifest's are `_data`-relative.
            let prefix = format!("{}/", layout::volume_data(name));
            let target = meta.link.as_deref().unwrap_or_default();
            let Some(rel_target) = target.strip_prefix(prefix.as_bytes()) else {
                return Err(ReadError::Hostile {
                    entry: String::from_utf8_lossy(&meta.path).into_owned(),
                    reason: "hardlink outside its volume's _data".into(),
                });
            };
            entry.link = Some(rel_target.to_vec());
        }
        match self.record(name, &entry) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e.into())),
        }
    }
}

/// A regular file's content digest by `super::chunks` rules, from its
/// data as the reader hands it (a sparse file's data segments back to
/// back; the holes between them hashed as zeros at no reading cost).
fn content(
    meta: &EntryMeta,
    data: &mut dyn Read,
    scratch: &mut [u8],
) -> Result<Chunked, ReadError> {
    let mut hasher = ChunkHasher::default();
    let whole = [(0u64, meta.size)];
    let segments = meta.sparse.as_deref().unwrap_or(&whole);
    let mut at = 0u64;
    for &(offset, len) in segments {
        // The reader checked the segments are ordered and inside the file.
        hasher.zeros(offset.saturating_sub(at));
        let mut left = len;
        while left > 0 {
            let want = left.min(scratch.len() as u64) as usize;
            let n = match data.read(&mut scratch[..want]) {
                Ok(0) => {
                    return Err(io_error(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "entry data ends early",
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(e)),
            };
            hasher.update(&scratch[..n]);
            left -= n as u64;
        }
        at = offset.saturating_add(len);
    }
    hasher.zeros(meta.size.saturating_sub(at));
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn trailer(trees: Option<&[(&str, &str)]>) -> Trailer {
        Trailer {
            format: crate::bundle::FORMAT.into(),
            entries: 0,
            files: 0,
            bytes: 0,
            header_sha256: String::new(),
            sums_sha256: String::new(),
            entries_sha256: String::new(),
            volumes: BTreeMap::new(),
            trees: trees.map(|t| {
                t.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
        }
    }

    fn volume(name: &str, tree: &str) -> VolumeTree {
        VolumeTree {
            name: name.into(),
            entries: 1,
            tree: tree.into(),
        }
    }

    fn refused_volume(r: Result<bool, FromBundleError>) -> String {
        match r {
            Err(FromBundleError::Tree { volume, .. }) => volume,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_volume_needs_its_equal_tree_in_the_trailer() {
        let ours = [volume("a", "11"), volume("b", "22")];
        let both = [("a", "11"), ("b", "22")];
        assert!(check_trees(&ours, &trailer(Some(&both))).unwrap());
        assert!(!check_trees(&ours, &trailer(None)).unwrap());
        let differs = [("a", "11"), ("b", "33")];
        assert_eq!(
            refused_volume(check_trees(&ours, &trailer(Some(&differs)))),
            "b"
        );
        let missing = [("a", "11")];
        assert_eq!(
            refused_volume(check_trees(&ours, &trailer(Some(&missing)))),
            "b"
        );
        let extra = [("a", "11"), ("b", "22"), ("c", "44")];
        assert_eq!(
            refused_volume(check_trees(&ours, &trailer(Some(&extra)))),
            "c"
        );
    }

    #[test]
    fn the_partial_file_sits_beside_the_manifest() {
        assert_eq!(
            partial_path(Path::new("/x/m.zst")),
            PathBuf::from("/x/m.zst.partial")
        );
        assert_eq!(partial_path(Path::new("m")), PathBuf::from("m.partial"));
    }
}
