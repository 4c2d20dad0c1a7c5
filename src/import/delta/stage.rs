//! Staging a delta: every entry the delta carries lands in the staging
//! directory (`staged/<n>`, a patch's new chunks as one file), and becomes
//! one `Op` in bundle order. Nothing here touches the target.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ops::{Attrs, Op, OpKind};
use super::MAX_OPS;
use crate::bundle::delta::{chunk_len, DeltaMark};
use crate::bundle::reader::{ReadError, Visitor};
use crate::bundle::{BundleHeader, EntryKind, EntryMeta, Place};
use crate::dataroot::DataRoot;
use crate::fileattrs;
use crate::idmap::{Direction, IdShift};
use crate::manifest::{self, ChunkHasher, CHUNK};

/// Largest opts.json accepted (as a full import).
const MAX_OPTS_JSON: u64 = 1 << 20;

/// Writes a delta's entries into staging as the reader verifies them.
pub struct DeltaStager<'a> {
    root: &'a DataRoot,
    dry_run: bool,
    /// This import's staging directory, once created.
    pub dir: Option<PathBuf>,
    pub ops: Vec<Op>,
    /// What each operation's path becomes (`base::merge_result`).
    pub new: super::base::NewEntries,
    /// The digests of a patch's new chunks, in its data order.
    pub patch_chunks: BTreeMap<u64, Vec<[u8; 32]>>,
    /// Bytes staged (file data, patches).
    pub data_bytes: u64,
    /// The signal that stopped staging.
    pub interrupted: Option<i32>,
    /// The carried containers' configs (`containers/<id>/`), kept apart
    /// from staging for `verify` after the import.
    pub containers: Option<tempfile::TempDir>,
    /// The volumes the round adds (`base::check_rounds`), with their
    /// directory's attributes once the bundle gave them.
    pub added: BTreeMap<String, Option<Attrs>>,
    ids: Option<IdShift>,
}

fn fail(path: &Path) -> impl FnOnce(io::Error) -> ReadError + '_ {
    move |e| ReadError::Visitor(format!("cannot write `{}`: {e}", path.display()))
}

impl<'a> DeltaStager<'a> {
    pub fn new(root: &'a DataRoot, dry_run: bool) -> DeltaStager<'a> {
        DeltaStager {
            root,
            dry_run,
            dir: None,
            ops: Vec::new(),
            new: BTreeMap::new(),
            patch_chunks: BTreeMap::new(),
            data_bytes: 0,
            interrupted: None,
            containers: None,
            added: BTreeMap::new(),
            ids: root
                .id_map()
                .map(|map| IdShift::new(map.clone(), Direction::ToHost)),
        }
    }

    /// Removes this import's staging (nothing outside it was written).
    pub fn discard(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = crate::import::commit::remove_staging(&dir);
        }
    }

    fn staged(&self, n: u64) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_default()
            .join("staged")
            .join(n.to_string())
    }

    fn create_staging(&mut self) -> Result<(), ReadError> {
        let staging_root = self.root.staging_dir();
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&staging_root)
            .map_err(fail(&staging_root))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = staging_root.join(format!("{}-{nanos}-delta", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(fail(&dir))?;
        // Ours from here: `discard` removes it if what follows fails.
        self.dir = Some(dir.clone());
        for sub in ["staged", "undo", "added"] {
            fs::create_dir(dir.join(sub)).map_err(fail(&dir))?;
        }
        // An added volume's operations build it here (`apply`), beside
        // the target: its directory and an empty `_data` to start from.
        for vol in self.added.keys() {
            let data = dir.join("added").join(vol).join("_data");
            fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(&data)
                .map_err(fail(&data))?;
        }
        Ok(())
    }

    fn push(&mut self, vol: &str, rel: &[u8], kind: OpKind) -> Result<u64, ReadError> {
        if self.ops.len() >= MAX_OPS {
            return Err(ReadError::Visitor(format!(
                "the delta changes more than {MAX_OPS} entries: import a full bundle of this round instead (export without --since)"
            )));
        }
        let n = self.ops.len() as u64;
        self.ops.push(Op::new(vol, rel, n, kind));
        Ok(n)
    }
}

impl Visitor for DeltaStager<'_> {
    fn header(&mut self, header: &BundleHeader) -> Result<(), ReadError> {
        crate::import::stage::check_record_names(header)?;
        // Refused here, before anything is written, when the target is not
        // the delta's base (the stat check of every entry comes after the
        // stream, which must be read to its trailer first).
        self.added = super::base::check_rounds(self.root, header)
            .map_err(ReadError::Refused)?
            .into_iter()
            .map(|vol| (vol, None))
            .collect();
        if !self.dry_run {
            self.create_staging()?;
            let keep = tempfile::tempdir().map_err(ReadError::Io)?;
            fs::create_dir(keep.path().join("containers")).map_err(ReadError::Io)?;
            self.containers = Some(keep);
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
        if let Some(signal) = crate::interrupt::requested() {
            self.interrupted = Some(signal);
            return Err(ReadError::Visitor("interrupted".into()));
        }
        match place {
            Place::Container { id, rel } if !self.dry_run => {
                self.stage_container(id, rel, meta, data)
            }
            Place::VolumeOpts { name } => self.stage_opts(name, meta, data),
            // The volume directory itself stays the target's, but for a
            // volume the round adds.
            Place::VolumeDir { name } => {
                if self.added.contains_key(name) {
                    let attrs = Attrs::of(&self.shifted(meta)?);
                    self.added.insert(name.to_string(), Some(attrs));
                }
                Ok(())
            }
            Place::VolumeData { name, rel } => {
                let meta = self.shifted(meta)?;
                self.stage_data(name, rel, &meta, data)
            }
            // Containers in a dry run are only read.
            _ => Ok(()),
        }
    }
}

impl DeltaStager<'_> {
    /// An entry's owners as the target gets them (userns-remapped).
    fn shifted(&self, meta: &EntryMeta) -> Result<EntryMeta, ReadError> {
        let mut m = meta.clone();
        if let Some(ids) = &self.ids {
            ids.apply(&mut m.uid, &mut m.gid, &mut m.xattrs)
                .map_err(|e| {
                    ReadError::Visitor(format!(
                        "`{}` in the bundle: {e}; nothing was imported",
                        String::from_utf8_lossy(&m.path)
                    ))
                })?;
        }
        Ok(m)
    }

    /// A container's config, kept for `verify` after the import (as a full
    /// import keeps them).
    fn stage_container(
        &mut self,
        id: &str,
        rel: &[u8],
        meta: &EntryMeta,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        let Some(keep) = &self.containers else {
            return Ok(());
        };
        let base = keep.path().join("containers").join(id);
        if rel.is_empty() || meta.kind == EntryKind::Dir {
            let at = if rel.is_empty() {
                base
            } else {
                base.join(std::ffi::OsStr::from_bytes(rel))
            };
            return fs::create_dir_all(&at).map_err(fail(&at));
        }
        if meta.kind != EntryKind::File || rel.contains(&b'/') {
            // Checkpoints are not carried by deltas: read and dropped.
            return io::copy(data, &mut io::sink())
                .map(drop)
                .map_err(ReadError::Io);
        }
        let at = base.join(std::ffi::OsStr::from_bytes(rel));
        let mut f = File::create(&at).map_err(fail(&at))?;
        io::copy(data, &mut f).map_err(fail(&at))?;
        Ok(())
    }

    fn stage_opts(
        &mut self,
        name: &str,
        meta: &EntryMeta,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        let (bytes, _) = crate::import::stage::read_opts(meta, name, data)?;
        // Replaced only when it differs from the target's.
        let current =
            crate::dataroot::regular_file::read(&self.root.volume_opts(name), MAX_OPTS_JSON).ok();
        if current.as_deref() == Some(bytes.as_slice()) {
            return Ok(());
        }
        let n = self.push(name, b"", OpKind::Opts)?;
        if self.dry_run {
            return Ok(());
        }
        let at = self.staged(n);
        fs::write(&at, &bytes).map_err(fail(&at))?;
        let f = File::open(&at).map_err(fail(&at))?;
        fileattrs::restore_fd(
            &f,
            (meta.uid, meta.gid, meta.mode),
            &meta.xattrs,
            (meta.mtime, meta.mtime_nsec),
        )
        .map_err(fail(&at))
    }

    fn stage_data(
        &mut self,
        vol: &str,
        rel: &[u8],
        meta: &EntryMeta,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        let attrs = Attrs::of(meta);
        match &meta.delta {
            Some(DeltaMark::Delete) => {
                if rel.is_empty() {
                    return Err(hostile(meta, "a deletion of `_data` itself"));
                }
                self.push(vol, rel, OpKind::Delete)?;
                Ok(())
            }
            Some(DeltaMark::Patch(p)) => {
                let mut whole = meta.clone();
                (whole.size, whole.sparse, whole.delta) = (p.size, None, None);
                self.new.insert(
                    self.ops.len() as u64,
                    manifest::Entry::from_meta(rel, &whole, None),
                );
                let n = self.push(
                    vol,
                    rel,
                    OpKind::Patch {
                        size: p.size,
                        data: p.data.clone(),
                        zero: p.zero.clone(),
                        attrs,
                    },
                )?;
                self.stage_patch(n, p.size, p.data_chunks().collect(), data)
            }
            None => match meta.kind {
                EntryKind::Dir => {
                    let n = self.push(vol, rel, OpKind::Dir { attrs })?;
                    self.new
                        .insert(n, manifest::Entry::from_meta(rel, meta, None));
                    Ok(())
                }
                EntryKind::Hardlink => {
                    let link = meta.link.as_deref().unwrap_or_default();
                    let prefix = format!("volumes/{vol}/_data/");
                    let target = link
                        .strip_prefix(prefix.as_bytes())
                        .ok_or_else(|| hostile(meta, "a hardlink out of its volume"))?;
                    let mut entry = manifest::Entry::from_meta(rel, meta, None);
                    entry.link = Some(target.to_vec());
                    let n = self.push(
                        vol,
                        rel,
                        OpKind::Link {
                            target: crate::bundle::hex(target),
                        },
                    )?;
                    self.new.insert(n, entry);
                    Ok(())
                }
                _ if rel.is_empty() => Err(hostile(meta, "`_data` that is not a directory")),
                _ => {
                    let n = self.push(vol, rel, OpKind::Put)?;
                    let content = self.stage_put(n, meta, data)?;
                    self.new
                        .insert(n, manifest::Entry::from_meta(rel, meta, content));
                    Ok(())
                }
            },
        }
    }

    /// A whole entry at `staged/<n>`, with its attributes; a file's content
    /// is hashed as it is written (manifest rules), and its digests returned.
    fn stage_put(
        &mut self,
        n: u64,
        meta: &EntryMeta,
        data: &mut dyn Read,
    ) -> Result<Option<manifest::Chunked>, ReadError> {
        if meta.kind == EntryKind::File {
            self.data_bytes = self.data_bytes.saturating_add(meta.size);
        }
        if self.dry_run {
            return match meta.kind {
                EntryKind::File => hash_content(meta, data, None).map(Some),
                _ => Ok(None),
            };
        }
        let at = self.staged(n);
        let mut chunked = None;
        match meta.kind {
            EntryKind::File => {
                let mut f = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&at)
                    .map_err(fail(&at))?;
                chunked = Some(hash_content(meta, data, Some(&mut f))?);
                if meta.sparse.is_some() {
                    f.set_len(meta.size).map_err(fail(&at))?;
                }
            }
            EntryKind::Symlink => {
                let link = std::ffi::OsStr::from_bytes(meta.link.as_deref().unwrap_or_default());
                std::os::unix::fs::symlink(link, &at).map_err(fail(&at))?;
            }
            EntryKind::Fifo | EntryKind::Char | EntryKind::Block => {
                fileattrs::make_node(&at, meta.kind.file_kind(), meta.rdev_major, meta.rdev_minor)
                    .map_err(fail(&at))?;
            }
            EntryKind::Dir | EntryKind::Hardlink => {}
        }
        crate::import::stage::restore_attrs(&at, meta).map_err(fail(&at))?;
        Ok(chunked)
    }

    /// A patch's new chunks, in one file at `staged/<n>`, each hashed.
    fn stage_patch(
        &mut self,
        n: u64,
        size: u64,
        chunks: Vec<u64>,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        let mut out = match self.dry_run {
            true => None,
            false => {
                let at = self.staged(n);
                Some(
                    File::options()
                        .write(true)
                        .create_new(true)
                        .open(&at)
                        .map_err(fail(&at))?,
                )
            }
        };
        let mut digests = Vec::with_capacity(chunks.len());
        let mut buf = vec![0u8; CHUNK as usize];
        for i in chunks {
            let len = chunk_len(i, size) as usize;
            data.read_exact(&mut buf[..len])
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => ReadError::Truncated(String::new()),
                    _ => ReadError::Io(e),
                })?;
            digests.push(Sha256::digest(&buf[..len]).into());
            if let Some(f) = &mut out {
                f.write_all(&buf[..len]).map_err(ReadError::Io)?;
            }
            self.data_bytes = self.data_bytes.saturating_add(len as u64);
        }
        self.patch_chunks.insert(n, digests);
        Ok(())
    }
}

/// Reads a file entry's content, into `out` if given (holes as holes),
/// and hashes it by the manifest's rules.
fn hash_content(
    meta: &EntryMeta,
    data: &mut dyn Read,
    mut out: Option<&mut File>,
) -> Result<manifest::Chunked, ReadError> {
    use std::io::{Seek, SeekFrom};
    let mut h = ChunkHasher::default();
    let whole = [(0, meta.size)];
    let segments = meta.sparse.as_deref().unwrap_or(&whole);
    let mut buf = vec![0u8; crate::bundle::IO_CHUNK];
    let mut pos = 0u64;
    for &(off, len) in segments {
        h.zeros(off - pos);
        if let Some(f) = out.as_deref_mut() {
            f.seek(SeekFrom::Start(off)).map_err(ReadError::Io)?;
        }
        let mut left = len;
        while left > 0 {
            let want = (left as usize).min(buf.len());
            let got = data.read(&mut buf[..want]).map_err(ReadError::Io)?;
            if got == 0 {
                return Err(ReadError::Truncated(String::new()));
            }
            h.update(&buf[..got]);
            if let Some(f) = out.as_deref_mut() {
                f.write_all(&buf[..got]).map_err(ReadError::Io)?;
            }
            left -= got as u64;
        }
        pos = off + len;
    }
    h.zeros(meta.size - pos);
    Ok(h.finish())
}

fn hostile(meta: &EntryMeta, reason: &str) -> ReadError {
    ReadError::Hostile {
        entry: String::from_utf8_lossy(&meta.path).into_owned(),
        reason: reason.into(),
    }
}
