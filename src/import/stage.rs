//! Staging: writes a bundle's entries under `<R>/volmig-staging/<id>/` as
//! the reader verifies them, and then checks that what landed on disk is
//! what the bundle described (a file removed or truncated meanwhile must
//! not be committed as a volume).
//!
//! Nothing here writes outside the staging directory; conflicts with the
//! target are found here (at the header, before anything is written) but
//! decided by the caller.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::base::BaseSpool;
use super::journal::Item;
use super::landed::{disk_kind, entry_kind, TreePrint};
use super::{Conflict, OnConflict};
use crate::bundle::reader::{ReadError, Visitor};
use crate::bundle::{BundleHeader, EntryKind, EntryMeta, Place};
use crate::dataroot::device::DataLocation;
use crate::dataroot::opts::VolumeOptions;
use crate::dataroot::DataRoot;
use crate::fileattrs::{self, FileAttrs};
use crate::idmap::{Direction, IdShift};
use crate::manifest::ChunkHasher;

/// What `Visitor::entry` returns when a signal asked to stop: the caller
/// sees `Stager::interrupted` and reports the signal.
const INTERRUPTED: &str = "interrupted";

/// Largest opts.json accepted (dockerd writes about 100 bytes).
const MAX_OPTS_JSON: u64 = 1 << 20;

/// Writes entries into the staging directory as the reader verifies them.
pub(super) struct Stager<'a> {
    root: &'a DataRoot,
    policy: OnConflict,
    dry_run: bool,
    /// This import's staging directory, once created.
    pub(super) dir: Option<PathBuf>,
    pub(super) conflicts: Vec<Conflict>,
    /// Directories created and not yet finished (their mtime and mode are
    /// set once nothing more is written inside them).
    dirs: Vec<(Vec<u8>, EntryMeta)>,
    /// Bytes of file data to write (holes excluded): the space needed.
    pub(super) data_bytes: u64,
    /// Each volume's own entries (its directory, `_data`, opts.json), to
    /// put back after a running daemon registered the volume over them.
    pub(super) tops: BTreeMap<String, VolumeTop>,
    /// What was written, to compare with what is found on disk.
    written: TreePrint,
    /// The signal that stopped staging.
    pub(super) interrupted: Option<i32>,
    /// `--map-path OLD=NEW`, longest OLD first.
    map_paths: Vec<(PathBuf, PathBuf)>,
    /// Bind-type volumes whose data the bundle carries, by volume name.
    pub(super) binds: BTreeMap<String, BindPlan>,
    /// Bind volumes whose opts.json `--map-path` rewrites: the bundle's
    /// entry and bytes, and the bytes as rewritten.
    pub(super) bundle_opts: BTreeMap<String, (EntryMeta, Vec<u8>, Vec<u8>)>,
    /// Where each volume's opts.json (as read) puts its data.
    pub(super) opts_locations: BTreeMap<String, DataLocation>,
    /// A remapped target: volume data ids become its host ids.
    ids: Option<IdShift>,
    /// A bundle of a pre-copy round: the spool of the base to record
    /// after the commit (`base`). `None` for other bundles, which then
    /// cost nothing more.
    pub(super) base: Option<BaseSpool>,
}

/// Where a carried bind volume's data goes.
#[derive(Debug, Clone)]
pub struct BindPlan {
    /// The device path on the target (after `--map-path`).
    pub target: PathBuf,
    /// Where it is staged: beside the target's nearest existing ancestor,
    /// on its filesystem (set once staging exists).
    pub staged: Option<PathBuf>,
}

/// The top entries of one volume, as the bundle has them.
#[derive(Debug, Clone, Default)]
pub struct VolumeTop {
    pub(super) dir: Option<EntryMeta>,
    pub(super) data: Option<EntryMeta>,
    pub(super) opts: Option<(EntryMeta, Vec<u8>)>,
}

impl<'a> Stager<'a> {
    pub(super) fn new(
        root: &'a DataRoot,
        policy: OnConflict,
        dry_run: bool,
        map_paths: &[(PathBuf, PathBuf)],
    ) -> Stager<'a> {
        let mut map_paths = map_paths.to_vec();
        map_paths.sort_by_key(|(old, _)| std::cmp::Reverse(old.as_os_str().len()));
        Stager {
            root,
            policy,
            dry_run,
            dir: None,
            conflicts: Vec::new(),
            dirs: Vec::new(),
            data_bytes: 0,
            tops: BTreeMap::new(),
            written: TreePrint::default(),
            interrupted: None,
            map_paths,
            binds: BTreeMap::new(),
            bundle_opts: BTreeMap::new(),
            opts_locations: BTreeMap::new(),
            ids: root
                .id_map()
                .map(|map| IdShift::new(map.clone(), Direction::ToHost)),
            base: None,
        }
    }

    /// A device path as `--map-path` moves it.
    pub(super) fn map_device(&self, device: &str) -> String {
        super::bind::map_path(&self.map_paths, device)
    }

    /// The carried bind volume a bundle path is the data of, with the
    /// path below `_data` (`b""` for `_data` itself).
    fn bind_part<'p>(&self, bundle_path: &'p [u8]) -> Option<(&BindPlan, &'p [u8])> {
        let rest = bundle_path.strip_prefix(b"volumes/")?;
        let slash = rest.iter().position(|&b| b == b'/')?;
        let name = std::str::from_utf8(&rest[..slash]).ok()?;
        let below = rest[slash + 1..].strip_prefix(b"_data")?;
        let below = match below {
            [] => below,
            [b'/', tail @ ..] => tail,
            _ => return None,
        };
        Some((self.binds.get(name)?, below))
    }

    /// The directory a bundle path is staged under, and the path below it.
    fn staged_base<'p>(&self, bundle_path: &'p [u8]) -> (PathBuf, &'p [u8]) {
        if let Some((bind, below)) = self.bind_part(bundle_path) {
            if let Some(staged) = &bind.staged {
                return (staged.clone(), below);
            }
        }
        (self.dir.clone().unwrap_or_default(), bundle_path)
    }

    /// Removes this import's staging (nothing outside it was written).
    pub(super) fn discard(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = super::commit::remove_staging(&dir);
        }
    }

    fn staged(&self, bundle_path: &[u8]) -> PathBuf {
        let (base, below) = self.staged_base(bundle_path);
        match below {
            [] => base,
            _ => base.join(std::ffi::OsStr::from_bytes(below)),
        }
    }

    /// Whether `bundle_path` is, in the staging directory, a non-directory
    /// (file, symlink itself, fifo, node) reached through real directories
    /// only: no symlink on the way.
    fn is_staged_leaf(&self, bundle_path: &[u8]) -> bool {
        if self.dir.is_none() {
            return false;
        }
        let (mut path, below) = self.staged_base(bundle_path);
        if below.is_empty() {
            return false;
        }
        let parts: Vec<&[u8]> = below.split(|&b| b == b'/').collect();
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
    pub(super) fn close_dirs(&mut self, next: &[u8]) -> Result<(), ReadError> {
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
        let staging_root = self.root.staging_dir();
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&staging_root)
            .map_err(|e| visitor_err(&staging_root, e))?;
        // Renames into volumes/ must stay on one filesystem.
        let volumes_dir = self.root.volumes_dir();
        if let (Ok(a), Ok(b)) = (fs::metadata(&staging_root), fs::metadata(&volumes_dir)) {
            if a.dev() != b.dev() {
                return Err(ReadError::Visitor(format!(
                    "`{}` is on another filesystem than `{}`: volmig stages beside the volumes so that committing is a rename; mount them together",
                    volumes_dir.display(),
                    staging_root.display()
                )));
            }
        }
        // The name is only for people: the import lock, not the name,
        // tells a live import from a dead one.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = staging_root.join(format!("{}-{nanos}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| visitor_err(&dir, e))?;
        for sub in ["volumes", "containers", "replaced"] {
            fs::create_dir(dir.join(sub)).map_err(|e| visitor_err(&dir, e))?;
        }
        self.dir = Some(dir);
        Ok(())
    }

    /// Checks that the staged tree holds exactly the entries written
    /// (`landed::check`).
    pub(super) fn check_landed(&self) -> Result<(), ReadError> {
        match &self.dir {
            Some(dir) => super::landed::check(dir, &self.binds, &self.written),
            None => Ok(()),
        }
    }
}

fn visitor_err(path: &Path, e: io::Error) -> ReadError {
    ReadError::Visitor(format!("cannot write `{}`: {e}", path.display()))
}

pub(super) fn restore_attrs(path: &Path, meta: &EntryMeta) -> io::Result<()> {
    let attrs = FileAttrs {
        kind: meta.kind.file_kind(),
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
        ctime: (0, 0),
        xattrs: meta.xattrs.clone(),
    };
    fileattrs::restore(path, &attrs)
}

impl Visitor for Stager<'_> {
    fn header(&mut self, header: &BundleHeader) -> Result<(), ReadError> {
        check_record_names(header)?;
        // A file or symlink where a volume or checkpoint would go is not a
        // volume to replace: moving it aside and back is not what anyone
        // asked for, and it cannot be exchanged like a directory.
        let mut places: Vec<PathBuf> = header
            .volumes
            .iter()
            .map(|v| self.root.volume_dir(&v.name))
            .collect();
        for c in &header.containers {
            if let Some(cp) = &c.checkpoint {
                places.push(self.root.checkpoint_dir(&c.id, cp));
            }
        }
        let odd: Vec<String> = places
            .iter()
            .filter(|p| p.symlink_metadata().is_ok_and(|m| !m.is_dir()))
            .map(|p| {
                format!(
                    "`{}` exists and is not a directory (a file or a symlink, which dockerd ignores): move it away, then import again",
                    p.display()
                )
            })
            .collect();
        if !odd.is_empty() {
            return Err(ReadError::Visitor(odd.join("\n")));
        }
        let mut refusals = Vec::new();
        for v in &header.volumes {
            if self.root.volume_dir(&v.name).symlink_metadata().is_ok() {
                self.conflicts.push(Conflict {
                    item: Item::Volume {
                        name: v.name.clone(),
                    },
                    identical: None,
                });
            }
        }
        for c in &header.containers {
            let Some(cp) = &c.checkpoint else { continue };
            if self
                .root
                .checkpoint_dir(&c.id, cp)
                .symlink_metadata()
                .is_ok()
            {
                self.conflicts.push(Conflict {
                    item: Item::Checkpoint {
                        container: c.id.clone(),
                        name: cp.clone(),
                    },
                    identical: None,
                });
            }
        }
        let maps = self.map_paths.clone();
        let binds = super::bind::plan_binds(
            self.root,
            header,
            |d| super::bind::map_path(&maps, d),
            &mut self.conflicts,
        )?;
        self.binds = binds.into_iter().collect();
        if self.policy == OnConflict::Fail {
            for c in &self.conflicts {
                refusals.push(c.refusal(self.root, self.policy));
            }
        }
        if !refusals.is_empty() && !self.dry_run {
            return Err(ReadError::Refused(refusals));
        }
        if !self.dry_run {
            self.create_staging()?;
            if let Some(dir) = &self.dir {
                super::bind::place_staging(dir, &mut self.binds)?;
                if let Some(round) = &header.round {
                    self.base = Some(BaseSpool::start(dir, &round.id));
                }
            }
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
            return Err(ReadError::Visitor(INTERRUPTED.into()));
        }
        let is_opts = matches!(place, Place::VolumeOpts { .. });
        self.stage_entry(meta, place, data)?;
        if !self.dry_run {
            // A hardlink is whatever it links: a file, a fifo, a symlink.
            let (kind, size) = match meta.kind {
                EntryKind::Hardlink => {
                    let link = meta.link.as_deref().unwrap_or_default();
                    fs::symlink_metadata(self.staged(link))
                        .map_or((0, 0), |m| (disk_kind(&m), m.len()))
                }
                // opts.json may have been rewritten (--map-path).
                _ if is_opts => fs::symlink_metadata(self.staged(&meta.path))
                    .map_or((0, 0), |m| (disk_kind(&m), m.len())),
                other => (entry_kind(other), meta.size),
            };
            self.written.add(&meta.path, kind, size);
        }
        Ok(())
    }

    fn digested(
        &mut self,
        meta: &EntryMeta,
        place: Place<'_>,
        digest: Option<&[u8; 32]>,
    ) -> Result<(), ReadError> {
        if let (Some(base), Place::VolumeData { name, rel }) = (&mut self.base, place) {
            base.add(name, rel, meta, digest);
        }
        Ok(())
    }
}

impl Stager<'_> {
    fn stage_entry(
        &mut self,
        meta: &EntryMeta,
        place: Place<'_>,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        let shifted = match &self.ids {
            Some(ids) if matches!(place, Place::VolumeData { .. }) => Some(shift_ids(meta, ids)?),
            _ => None,
        };
        let meta = shifted.as_ref().unwrap_or(meta);
        if meta.kind == EntryKind::File {
            let written = match &meta.sparse {
                Some(segments) => segments.iter().map(|s| s.1).sum(),
                None => meta.size,
            };
            self.data_bytes = self.data_bytes.saturating_add(written);
        }
        if let Place::VolumeOpts { name } = place {
            return self.stage_opts(meta, name, data);
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
        let chunks = matches!(place, Place::VolumeData { .. })
            && self.base.as_ref().is_some_and(|b| b.wants_chunks(meta));
        self.make_entry(meta, data, chunks)?;
        // The base records the ids as laid down, not as the bundle has them.
        if let (Some(shifted), Some(base)) = (shifted, &mut self.base) {
            base.set_laid(shifted);
        }
        Ok(())
    }

    /// An opts.json whose device `--map-path` moves, with the new device
    /// (written as dockerd writes it: Go's json.Marshal of the struct).
    fn mapped_opts(&self, bytes: Vec<u8>) -> Vec<u8> {
        let Ok(mut opts) = VolumeOptions::decode(&bytes) else {
            return bytes;
        };
        let mapped = self.map_device(&opts.mount_device);
        if mapped == opts.mount_device {
            return bytes;
        }
        opts.mount_device = mapped;
        serde_json::to_vec(&opts).unwrap_or(bytes)
    }

    /// `volumes/<name>/opts.json`: read whole (it is small and must decode
    /// as dockerd decodes it), then staged.
    fn stage_opts(
        &mut self,
        meta: &EntryMeta,
        name: &str,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        let (bytes, options) = read_opts(meta, name, data)?;
        self.opts_locations
            .insert(name.to_string(), DataLocation::of(Some(&options)));
        let mapped = self.mapped_opts(bytes.clone());
        if mapped != bytes {
            // For skip-identical: the target's opts.json says NEW.
            self.bundle_opts
                .insert(name.to_string(), (meta.clone(), bytes, mapped.clone()));
        }
        if self.dry_run {
            return Ok(());
        }
        let bytes = mapped;
        self.tops.entry(name.to_string()).or_default().opts = Some((meta.clone(), bytes.clone()));
        self.close_dirs(&meta.path)?;
        let target = self.staged(&meta.path);
        write_new(&target, &bytes).map_err(|e| visitor_err(&target, e))?;
        restore_attrs(&target, meta).map_err(|e| visitor_err(&target, e))
    }

    /// Creates one staged entry of any kind, with its attributes (a
    /// directory's once it is complete). With `chunks`, a file's chunk
    /// digests go to the base spool: computed from the bytes written.
    fn make_entry(
        &mut self,
        meta: &EntryMeta,
        data: &mut dyn Read,
        chunks: bool,
    ) -> Result<(), ReadError> {
        let target = self.staged(&meta.path);
        let fail = |e: io::Error| visitor_err(&target, e);
        match meta.kind {
            EntryKind::Dir => {
                if let Some((_, b"")) = self.bind_part(&meta.path) {
                    self.make_mountpoint(&meta.path)?;
                }
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
                let mut chunker = chunks.then(ChunkHasher::default);
                write_content(&mut file, meta, data, chunker.as_mut()).map_err(|e| {
                    match e.kind() {
                        io::ErrorKind::UnexpectedEof => ReadError::Truncated(String::new()),
                        _ => fail(e),
                    }
                })?;
                if let (Some(chunker), Some(base)) = (chunker, &mut self.base) {
                    base.set_chunked(chunker.finish());
                }
            }
            EntryKind::Symlink => {
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
                fileattrs::make_node(
                    &target,
                    meta.kind.file_kind(),
                    meta.rdev_major,
                    meta.rdev_minor,
                )
                .map_err(fail)?;
            }
        }
        restore_attrs(&target, meta).map_err(|e| visitor_err(&target, e))
    }
}

impl Stager<'_> {
    /// A carried bind volume's `_data` in the volume's own staged
    /// directory: the empty mountpoint dockerd binds the device over,
    /// 0755 and owned like the volume directory (as `docker volume
    /// create` makes it).
    fn make_mountpoint(&mut self, data_path: &[u8]) -> Result<(), ReadError> {
        let base = self.dir.clone().unwrap_or_default();
        let at = base.join(std::ffi::OsStr::from_bytes(data_path));
        let fail = |e: io::Error| visitor_err(&at, e);
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&at)
            .map_err(fail)?;
        if let Some(volume) = at.parent() {
            let owner = fs::symlink_metadata(volume).map_err(fail)?;
            std::os::unix::fs::lchown(&at, Some(owner.uid()), Some(owner.gid())).map_err(fail)?;
        }
        fs::set_permissions(&at, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(fail)?;
        self.written.add(data_path, entry_kind(EntryKind::Dir), 0);
        Ok(())
    }
}

/// Refuses a header whose volume carries another volume's metadata.db
/// record (full and delta imports alike).
///
/// # Security
/// metadata.db records are keyed by volume name: a record whose own Name
/// is another volume's would rewrite that volume's driver and labels on
/// the target.
pub(super) fn check_record_names(header: &BundleHeader) -> Result<(), ReadError> {
    for v in &header.volumes {
        if let Some(record) = v.record.as_ref().filter(|r| r.name != v.name) {
            return Err(ReadError::Hostile {
                entry: crate::bundle::HEADER_PATH.into(),
                reason: format!(
                    "volume `{}` carries the metadata.db record of `{}`: a record must name its own volume",
                    v.name, record.name
                ),
            });
        }
    }
    Ok(())
}

/// A bundle's `volumes/<name>/opts.json`, read whole (it is small) and
/// decoded as dockerd decodes it, for a full import and a delta alike.
pub(super) fn read_opts(
    meta: &EntryMeta,
    name: &str,
    data: &mut dyn Read,
) -> Result<(Vec<u8>, VolumeOptions), ReadError> {
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
    let options = VolumeOptions::decode(&bytes).map_err(|go_error| ReadError::Hostile {
        entry: String::from_utf8_lossy(&meta.path).into_owned(),
        reason: format!("dockerd could not parse it and would not start: error while unmarshaling volume options for volume: {name}: {go_error}"),
    })?;
    Ok((bytes, options))
}

/// A volume data entry with the target's host ids (userns-remap); a
/// container id the target's range does not hold refuses the import.
fn shift_ids(meta: &EntryMeta, ids: &IdShift) -> Result<EntryMeta, ReadError> {
    let mut meta = meta.clone();
    ids.apply(&mut meta.uid, &mut meta.gid, &mut meta.xattrs)
        .map_err(|e| {
            ReadError::Visitor(format!(
                "`{}` in the bundle: {e}; nothing was imported",
                String::from_utf8_lossy(&meta.path)
            ))
        })?;
    Ok(meta)
}

pub(super) fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::options().write(true).create_new(true).open(path)?;
    f.write_all(bytes)
}

/// Writes a file's content; holes of a sparse file stay holes. With
/// `chunker`, the same bytes (holes as zeros) are fed to it.
fn write_content(
    file: &mut File,
    meta: &EntryMeta,
    data: &mut dyn Read,
    mut chunker: Option<&mut ChunkHasher>,
) -> io::Result<()> {
    let mut buf = vec![0u8; crate::bundle::IO_CHUNK];
    let whole = [(0, meta.size)];
    let segments = meta.sparse.as_deref().unwrap_or(&whole);
    for &(off, len) in segments {
        if meta.sparse.is_some() {
            file.seek(SeekFrom::Start(off))?;
        }
        if let Some(c) = chunker.as_deref_mut() {
            c.zeros(off.saturating_sub(c.len()));
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
            if let Some(c) = chunker.as_deref_mut() {
                c.update(&buf[..n]);
            }
            left -= n as u64;
        }
    }
    if let Some(c) = chunker {
        c.zeros(meta.size.saturating_sub(c.len()));
    }
    if meta.sparse.is_some() {
        // Holes at the end exist only as the file's length.
        file.set_len(meta.size)?;
    }
    Ok(())
}
