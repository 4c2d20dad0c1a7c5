//! What a pre-copy round's bundle adds to a plain one: the manifest of
//! what it carries and each volume's tree digest (`RoundOut`), and for a
//! delta (`since`) the entries only a delta has: unchanged entries
//! recorded but not written, deletions, patches of changed chunks.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{BundleWriter, WriteError};
use crate::bundle::delta::{DeltaMark, Patch};
use crate::bundle::patch::{changed_chunks, send_spool};
use crate::bundle::since::Base;
use crate::bundle::ustar::{pad, write_tar_header};
use crate::bundle::walk::{self, Large};
use crate::bundle::{EntryKind, EntryMeta};
use crate::manifest::{self, Chunked, ManifestError, ManifestWriter, TreeDigest};

/// What a bundle of a pre-copy round records of its volumes' `_data`.
pub(super) struct RoundOut {
    pub(super) manifest: Option<ManifestWriter>,
    /// The volume whose entries are being written, and its digest so far.
    pub(super) current: Option<(Arc<str>, TreeDigest)>,
    pub(super) trees: BTreeMap<String, String>,
}

impl RoundOut {
    /// Records one `_data` entry of `volume`.
    pub(super) fn add(
        &mut self,
        volume: &str,
        entry: &manifest::Entry,
    ) -> Result<(), ManifestError> {
        if self.current.as_ref().is_none_or(|(v, _)| &**v != volume) {
            self.close()?;
            if let Some(m) = &mut self.manifest {
                m.volume(volume)?;
            }
            self.current = Some((Arc::from(volume), TreeDigest::default()));
        }
        if let Some((_, tree)) = &mut self.current {
            tree.add(entry);
        }
        if let Some(m) = &mut self.manifest {
            m.entry(entry)?;
        }
        Ok(())
    }

    /// Ends the current volume.
    pub(super) fn close(&mut self) -> Result<(), ManifestError> {
        if let Some((volume, tree)) = self.current.take() {
            let entries = tree.entries();
            let hex = tree.hex();
            if let Some(m) = &mut self.manifest {
                m.end(&volume, entries, &hex)?;
            }
            self.trees.insert(volume.to_string(), hex);
        }
        Ok(())
    }
}

impl BundleWriter<'_> {
    /// Writes the manifest of what the bundle carries to `manifest` (the
    /// header must have a `round`, whose id the manifest names).
    pub fn with_manifest(mut self, manifest: ManifestWriter) -> Self {
        if let Some(round) = &mut self.round {
            round.manifest = Some(manifest);
        }
        self
    }

    /// Makes this bundle a delta onto `base` (the header's round must name
    /// it): entries as in the base are not carried, changed large files
    /// go as patches of their changed chunks, and what the base has and
    /// the source does not goes as deletions.
    pub fn with_base(mut self, base: Base) -> Self {
        self.base = Some(base);
        self
    }

    /// A pre-copy round (the containers may be running): a file that
    /// changes while it is read is carried as read and its manifest entry
    /// marked, so that the next round carries it again, instead of failing
    /// the export. What is hashed is still what is written.
    pub fn tolerate_changes(mut self, tolerant: bool) -> Self {
        self.tolerant = tolerant;
        self
    }

    /// Records a `_data` entry of `volume` in the round (manifest, tree
    /// digest), written or not.
    pub(super) fn record(
        &mut self,
        volume: Option<&str>,
        entry: &manifest::Entry,
    ) -> Result<(), WriteError> {
        if let (Some(round), Some(volume)) = (&mut self.round, volume) {
            round.add(volume, entry)?;
        }
        Ok(())
    }

    /// A delta's deletion entry at `path`.
    pub(super) fn add_deletion(
        &mut self,
        path: Vec<u8>,
        volume: Option<&str>,
        rel_start: usize,
    ) -> Result<(), WriteError> {
        let meta = EntryMeta {
            path,
            kind: EntryKind::File,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size: 0,
            link: None,
            rdev_major: 0,
            rdev_minor: 0,
            xattrs: Vec::new(),
            sparse: None,
            delta: Some(DeltaMark::Delete),
        };
        write_tar_header(&mut self.sink, &meta, 0, Vec::new()).map_err(WriteError::Write)?;
        let digest: [u8; 32] = Sha256::digest(b"").into();
        self.files += 1;
        self.entries += 1;
        let tail = meta.describe_tail(Some(&digest));
        self.describe(&meta, volume, rel_start, Some(&digest), &tail)
            .map_err(WriteError::Write)
    }

    /// A delta's changed large file: only its changed chunks, or nothing
    /// when it is as in the base after all (`--checksum`, or a stat that
    /// moved with nothing else).
    pub(super) fn add_patch(
        &mut self,
        meta: EntryMeta,
        large: &Large,
        source: &Path,
        base: &manifest::Entry,
        (volume, rel_start): (Option<&str>, usize),
        stat: Option<(u64, (i64, u32))>,
    ) -> Result<(), WriteError> {
        let read = changed_chunks(large, &meta, base, source, self.tolerant, self.progress)?;
        let stat = match read.changed_while_read {
            true => {
                self.dirty.push(source.display().to_string());
                None
            }
            false => stat,
        };
        let entry = manifest_entry(&meta, rel_start, Some(read.chunked.clone()), stat);
        if let Some(entry) = &entry {
            if entry.same_description(base) {
                return self.record(volume, entry);
            }
        }
        let mut shown = meta.clone();
        shown.size = read.spool_len;
        shown.sparse = None;
        shown.delta = Some(DeltaMark::Patch(Box::new(Patch {
            size: meta.size,
            data: read.data,
            zero: read.zero,
        })));
        write_tar_header(&mut self.sink, &shown, read.spool_len, Vec::new())
            .map_err(|e| walk::header_error(e, source))?;
        let sink = &mut self.sink;
        let digest = send_spool(&read.spools, &mut |chunk| sink.write_chunk(chunk))?;
        pad(&mut self.sink, read.spool_len).map_err(WriteError::Write)?;
        self.files += 1;
        self.bytes += read.spool_len;
        self.entries += 1;
        let tail = shown.describe_tail(Some(&digest));
        self.describe(&shown, volume, rel_start, Some(&digest), &tail)
            .map_err(WriteError::Write)?;
        match &entry {
            Some(entry) => self.record(volume, entry),
            None => Ok(()),
        }
    }
}

/// The manifest entry of a written entry of a volume's `_data` (`None`
/// for anything else): its `_data`-relative path and hardlink target,
/// its content digest, the stat it was read with.
pub(super) fn manifest_entry(
    meta: &EntryMeta,
    rel_start: usize,
    content: Option<Chunked>,
    stat: Option<(u64, (i64, u32))>,
) -> Option<manifest::Entry> {
    let rel = &meta.path[rel_start.min(meta.path.len())..];
    let data_rel = data_relative(rel)?;
    let mut entry = manifest::Entry::from_meta(data_rel, meta, content);
    if let Some(link) = &mut entry.link {
        if meta.kind == EntryKind::Hardlink {
            // A bundle path: the manifest's are `_data`-relative.
            let prefix_len = rel_start + b"_data/".len();
            *link = link.get(prefix_len..).unwrap_or_default().to_vec();
        }
    }
    // Without a stat (it changed while read), the next round re-reads it.
    entry.ino = stat.map(|s| s.0);
    entry.ctime = stat.map(|s| s.1);
    Some(entry)
}

/// `_data` -> `""`, `_data/a/b` -> `a/b`; `None` for the volume's other
/// entries (its directory, opts.json).
fn data_relative(rel: &[u8]) -> Option<&[u8]> {
    match rel {
        b"_data" => Some(b""),
        _ => rel.strip_prefix(b"_data/"),
    }
}
