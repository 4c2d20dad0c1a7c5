//! The base for deltas: after an import of a pre-copy round (a bundle
//! whose header has a `round`) has committed, a manifest per volume of
//! what it laid down, `<R>/volmig-bases/<volume>.manifest`, so that a
//! later delta import can check that the target is still exactly that
//! base (by stat: inode and ctime of each entry) and compute the result's
//! tree digest without reading unchanged files (`docs/incremental.md`).
//!
//! Memory does not grow with the number of entries: while staging, each
//! volume data entry's record (attributes as laid down, content digest,
//! chunk digests of a large file) goes to a spool, itself a manifest
//! stream in an unlinked file in the staging directory. After the commit
//! the spool is read back in bundle order beside a walk of the landed
//! tree in the same order (`walk`), which adds the target's inode and
//! ctime to each record; the result is written to a temporary name and
//! renamed into place.
//!
//! Never part of the import's transaction: the volumes are committed
//! before anything here runs, and nothing here can fail or undo the
//! import. A base that cannot be recorded is a warning (deltas onto the
//! target are then refused until a full import). Nothing here writes
//! under `volumes/`.

mod spool;
pub(crate) mod walk;

use crate::dataroot::metadata::VolumeRecord;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::bundle::Trailer;
use crate::dataroot::DataRoot;
use crate::manifest::{
    self, Entry, ManifestError, ManifestHeader, ManifestReader, ManifestWriter, Record, TreeDigest,
};
pub(in crate::import) use spool::BaseSpool;
use walk::{Landed, LandedWalk, WalkError};

/// What the warnings end with: what a missing base means for the user.
const REFUSED_UNTIL_FULL: &str = "deltas onto this target will be refused until a full import (`volmig export --manifest-out M`, then `volmig import` of that bundle)";

/// Why one volume's base was not recorded.
#[derive(Debug, thiserror::Error)]
enum BaseError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Walk(#[from] WalkError),
    #[error("cannot write `{path}`: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("`{path}` differs from the bundle after the import: {detail}")]
    Differs { path: String, detail: String },
}

/// The header of a base (and of its spool).
fn base_header(round: &str, data_root: &Path, record: Option<VolumeRecord>) -> ManifestHeader {
    ManifestHeader {
        format: manifest::FORMAT.into(),
        chunk_size: manifest::CHUNK,
        bundle: round.to_string(),
        side: "target".into(),
        host: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        data_root: data_root.display().to_string(),
        record,
    }
}

/// Right after a commit: removes the recorded bases of `volumes` (they
/// describe the volumes as they were before). Returns warnings.
pub(super) fn forget<'a>(root: &DataRoot, volumes: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut warnings = Vec::new();
    // No directory, no base (something else in its place is `record`'s
    // to report).
    if !fs::symlink_metadata(root.bases_dir()).is_ok_and(|m| m.is_dir()) {
        return warnings;
    }
    let mut removed = false;
    for name in volumes {
        let path = root.base_manifest(name);
        match fs::remove_file(&path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warnings.push(format!(
                "the base for deltas of volume `{name}`, `{}`, describes it as it was before this import but cannot be removed ({e}): remove it (rm {})",
                path.display(),
                path.display()
            )),
        }
    }
    if removed {
        let dir = root.bases_dir();
        if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
            warnings.push(format!("cannot sync `{}`: {e}", dir.display()));
        }
    }
    warnings
}

/// What `record` did.
#[derive(Debug, Default)]
pub(super) struct Recorded {
    /// The bases written.
    pub bases: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// After the commit of a round `round`: writes each spooled volume's base
/// (`volumes`: the bundle's volumes, in its order; `data_dir`: where a
/// volume's data landed, `_data` or a bind volume's device directory).
/// The trailer's tree digests must match the spool's.
pub(super) fn record(
    root: &DataRoot,
    spool: BaseSpool,
    round: &str,
    trailer: &Trailer,
    volumes: &[String],
    data_dir: &dyn Fn(&str) -> PathBuf,
    record_of: &dyn Fn(&str) -> Option<VolumeRecord>,
) -> Recorded {
    let mut out = Recorded::default();
    let not_recorded = |name: &str, why: &dyn std::fmt::Display| {
        format!(
            "the base for deltas of volume `{name}` was not recorded ({why}): {REFUSED_UNTIL_FULL}"
        )
    };
    // A round id names a base in every later delta's header; volmig's are
    // 32 hex digits. Anything else is not one volmig made.
    let plain =
        !round.is_empty() && round.len() <= 128 && round.bytes().all(|b| b.is_ascii_hexdigit());
    let refuse_all = |why: String, out: &mut Recorded| {
        for name in volumes {
            out.warnings.push(not_recorded(name, &why));
        }
    };
    if !plain {
        refuse_all(
            "the bundle's round id is not one volmig writes".into(),
            &mut out,
        );
        return out;
    }
    let Some(theirs) = &trailer.trees else {
        refuse_all(
            "the bundle names a round but its trailer has no tree digests".into(),
            &mut out,
        );
        return out;
    };
    let (spool_path, file, ours) = match spool.finish() {
        Ok(done) => done,
        Err(why) => {
            refuse_all(why, &mut out);
            return out;
        }
    };
    let dir = match ensure_bases_dir(root) {
        Ok(dir) => dir,
        Err(e) => {
            refuse_all(e.to_string(), &mut out);
            return out;
        }
    };
    let mut reader = match ManifestReader::from_reader(Box::new(file), &spool_path) {
        Ok(r) => r,
        Err(e) => {
            refuse_all(e.to_string(), &mut out);
            return out;
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    // The volume being recorded; its state is `Err` once it failed (its
    // records are then read past up to its end).
    let mut current: Option<(String, Result<VolumeOut, BaseError>)> = None;
    let mut stopped = None;
    loop {
        let record = match reader.next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                if let Some((name, state)) = current.take() {
                    if let Ok(v) = state {
                        v.abandon();
                    }
                    out.warnings.push(not_recorded(&name, &e));
                }
                stopped = Some(e.to_string());
                break;
            }
        };
        match record {
            Record::Volume(v) => {
                let name = v.volume;
                seen.insert(name.clone());
                let (a, b) = (ours.get(&name), theirs.get(&name));
                if a.is_none() || a != b {
                    out.warnings.push(format!(
                        "BUG: volume `{name}`: the bundle's tree digest ({}) is not the digest of what this import laid down ({}): the source's and the target's digests disagree, a bug in volmig (please report it, with the versions of both sides); the base for deltas was not recorded: {REFUSED_UNTIL_FULL}",
                        b.map_or("none", String::as_str),
                        a.map_or("none", String::as_str),
                    ));
                    current = None;
                    continue;
                }
                let header = base_header(round, root.given(), record_of(&name));
                let state = VolumeOut::start(&dir, &name, &header, &data_dir(&name));
                current = Some((name, state));
            }
            Record::Entry(e) => {
                if let Some((_, state)) = &mut current {
                    if let Ok(v) = state {
                        if let Err(err) = v.add(e) {
                            if let Ok(v) = std::mem::replace(state, Err(err)) {
                                v.abandon();
                            }
                        }
                    }
                }
            }
            Record::End(_) => match current.take() {
                Some((_, Ok(v))) => match v.finish() {
                    Ok(path) => out.bases.push(path),
                    Err((name, e)) => out.warnings.push(not_recorded(&name, &e)),
                },
                Some((name, Err(e))) => out.warnings.push(not_recorded(&name, &e)),
                None => {}
            },
        }
    }
    if let Some((name, state)) = current.take() {
        if let Ok(v) = state {
            v.abandon();
        }
        out.warnings.push(not_recorded(
            &name,
            &"the spool ends before its volume does",
        ));
    }
    let why = stopped.unwrap_or_else(|| "it was not spooled".into());
    for name in volumes.iter().filter(|v| !seen.contains(*v)) {
        out.warnings.push(not_recorded(name, &why));
    }
    out
}

/// Creates `volmig-bases/` when missing (0700: root's, like staging).
fn ensure_bases_dir(root: &DataRoot) -> Result<PathBuf, BaseError> {
    let dir = root.bases_dir();
    let failed = |source| BaseError::Write {
        path: dir.clone(),
        source,
    };
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => return Ok(dir),
        Ok(_) => {
            return Err(failed(io::Error::other(
                "it is not a directory (a file or a symlink): move it away",
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(failed)?;
    File::open(root.path())
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(dir)
}

/// One volume's base being written: the spool's records merged with the
/// walk of the landed tree.
struct VolumeOut {
    name: String,
    walk: LandedWalk,
    writer: ManifestWriter,
    tmp: PathBuf,
    path: PathBuf,
    tree: TreeDigest,
}

impl VolumeOut {
    fn start(
        dir: &Path,
        name: &str,
        header: &ManifestHeader,
        data: &Path,
    ) -> Result<VolumeOut, BaseError> {
        let walk = LandedWalk::open(data)?;
        let tmp = dir.join(format!(".{name}.manifest.volmig-tmp"));
        let failed = |source| BaseError::Write {
            path: tmp.clone(),
            source,
        };
        // A leftover of a killed run is replaced: we hold the import lock.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(failed(e)),
            _ => {}
        }
        let file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(failed)?;
        let writer = ManifestWriter::new(file, &tmp, header).and_then(|mut w| {
            w.volume(name)?;
            Ok(w)
        });
        let writer = writer.inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        Ok(VolumeOut {
            name: name.to_string(),
            walk,
            path: dir.join(format!("{name}.manifest")),
            tmp,
            writer,
            tree: TreeDigest::default(),
        })
    }

    /// The next entry: the spool's, with the target's inode and ctime of
    /// the same path.
    fn add(&mut self, mut entry: Entry) -> Result<(), BaseError> {
        let landed = self.walk.next()?;
        check_landed(&entry, landed.as_ref())?;
        if let Some(l) = landed {
            entry.ctime = Some(l.ctime);
            entry.ino = Some(l.ino);
        }
        self.tree.add(&entry);
        self.writer.entry(&entry)?;
        Ok(())
    }

    /// Ends the base and renames it into place, durably. Returns its path
    /// (or the volume's name and why not).
    fn finish(mut self) -> Result<PathBuf, (String, BaseError)> {
        let name = self.name.clone();
        let tmp = self.tmp.clone();
        let result = (|| -> Result<PathBuf, BaseError> {
            if let Some(extra) = self.walk.next()? {
                return Err(BaseError::Differs {
                    path: show(&extra.path),
                    detail: "it is on disk but not in the bundle".into(),
                });
            }
            let entries = self.tree.entries();
            let tree = std::mem::take(&mut self.tree).hex();
            self.writer.end(&self.name, entries, &tree)?;
            self.writer.finish()?;
            let failed = |source| BaseError::Write {
                path: self.path.clone(),
                source,
            };
            fs::rename(&self.tmp, &self.path).map_err(failed)?;
            let dir = self.path.parent().unwrap_or(Path::new("."));
            File::open(dir).and_then(|d| d.sync_all()).map_err(failed)?;
            Ok(self.path)
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            (name, e)
        })
    }

    /// Gives up: the temporary file goes.
    fn abandon(self) {
        let tmp = self.tmp.clone();
        drop(self);
        let _ = fs::remove_file(tmp);
    }
}

fn show(path: &[u8]) -> String {
    match path {
        b"" => "_data".into(),
        _ => String::from_utf8_lossy(path).into_owned(),
    }
}

/// Whether the landed entry is the one the spool describes, as laid down:
/// same path and kind, and (where the kernel keeps them as given) the
/// same mode, owner, mtime and size. A base that disagreed with the disk
/// would have every later delta refused at that path.
fn check_landed(e: &Entry, landed: Option<&Landed>) -> Result<(), BaseError> {
    let differs = |path: &[u8], detail: String| BaseError::Differs {
        path: show(path),
        detail,
    };
    let Some(l) = landed else {
        return Err(differs(
            &e.path,
            "it is in the bundle but not on disk".into(),
        ));
    };
    if l.path != e.path {
        return Err(match manifest::path_order(&l.path, &e.path) {
            std::cmp::Ordering::Less => {
                differs(&l.path, "it is on disk but not in the bundle".into())
            }
            _ => differs(&e.path, "it is in the bundle but not on disk".into()),
        });
    }
    match l.differs(e, false) {
        None => Ok(()),
        Some(detail) => Err(differs(&e.path, detail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::EntryKind;
    use crate::bundle::EntryMeta;
    use crate::manifest::Chunked;
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;

    /// A data-root with volume `v` holding `_data/f` (5 bytes), and the
    /// bundle entries that describe it as it is.
    fn volume() -> (tempfile::TempDir, DataRoot, Vec<EntryMeta>) {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("volumes/v/_data");
        fs::create_dir_all(&data).unwrap();
        fs::create_dir(tmp.path().join("staging")).unwrap();
        fs::write(data.join("f"), b"hello").unwrap();
        let root = DataRoot::open(tmp.path(), None).unwrap();
        let meta = |rel: &str, p: &Path| {
            let m = fs::symlink_metadata(p).unwrap();
            EntryMeta {
                path: format!("volumes/v/_data{rel}").into_bytes(),
                kind: if m.is_dir() {
                    EntryKind::Dir
                } else {
                    EntryKind::File
                },
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                mtime: m.mtime(),
                mtime_nsec: m.mtime_nsec() as u32,
                size: if m.is_dir() { 0 } else { m.len() },
                link: None,
                rdev_major: 0,
                rdev_minor: 0,
                xattrs: Vec::new(),
                sparse: None,
                delta: None,
            }
        };
        let metas = vec![meta("", &data), meta("/f", &data.join("f"))];
        (tmp, root, metas)
    }

    /// Spools `metas` as volume `v`'s entries, and a trailer whose tree
    /// digest for it is `tree` (`None`: the spool's own).
    fn spooled(root: &DataRoot, metas: &[EntryMeta], tree: Option<&str>) -> (BaseSpool, Trailer) {
        let mut spool = BaseSpool::start(&root.path().join("staging"), "ab12");
        let mut digest = TreeDigest::default();
        for m in metas {
            let rel = m.path.strip_prefix(b"volumes/v/_data").unwrap();
            let rel = rel.strip_prefix(b"/").unwrap_or(rel);
            let sha: Option<[u8; 32]> = (m.kind == EntryKind::File)
                .then(|| <sha2::Sha256 as sha2::Digest>::digest(b"hello").into());
            spool.add("v", rel, m, sha.as_ref());
            let content = sha.map(|c| Chunked {
                content: c,
                chunks: Vec::new(),
                recorded: true,
            });
            digest.add(&Entry::from_meta(rel, m, content));
        }
        let trailer = Trailer {
            format: String::new(),
            entries: 0,
            files: 0,
            bytes: 0,
            header_sha256: String::new(),
            sums_sha256: String::new(),
            entries_sha256: String::new(),
            volumes: BTreeMap::new(),
            trees: Some(BTreeMap::from([(
                "v".to_string(),
                tree.map_or_else(|| digest.hex(), str::to_string),
            )])),
        };
        (spool, trailer)
    }

    fn record_v(root: &DataRoot, spool: BaseSpool, trailer: &Trailer) -> Recorded {
        let data = root.volume_data_dir("v");
        record(
            root,
            spool,
            "ab12",
            trailer,
            &["v".into()],
            &|_| data.clone(),
            &|_| None,
        )
    }

    #[test]
    fn a_base_takes_inode_and_ctime_from_the_landed_tree() {
        let (_tmp, root, metas) = volume();
        let (spool, trailer) = spooled(&root, &metas, None);
        let got = record_v(&root, spool, &trailer);
        assert!(got.warnings.is_empty(), "{:?}", got.warnings);
        assert_eq!(got.bases, [root.base_manifest("v")]);
        let mut r = ManifestReader::open(&root.base_manifest("v")).unwrap();
        assert_eq!(r.header().side, "target");
        assert_eq!(r.header().bundle, "ab12");
        assert!(matches!(r.next().unwrap(), Some(Record::Volume(_))));
        for rel in ["", "f"] {
            let Some(Record::Entry(e)) = r.next().unwrap() else {
                panic!("an entry")
            };
            let m = fs::symlink_metadata(root.volume_data_dir("v").join(rel)).unwrap();
            assert_eq!(e.ino, Some(m.ino()));
            assert_eq!(e.ctime, Some((m.ctime(), m.ctime_nsec() as u32)));
        }
        let Some(Record::End(end)) = r.next().unwrap() else {
            panic!("the end")
        };
        assert_eq!(Some(&end.tree), trailer.trees.as_ref().unwrap().get("v"));
        assert_eq!(names(&root.bases_dir()), ["v.manifest"]);
    }

    #[test]
    fn a_tree_that_changed_on_disk_is_not_recorded() {
        let (_tmp, root, metas) = volume();
        let data = root.volume_data_dir("v");
        let keep_mtime =
            || crate::fileattrs::set_mtime(&data, metas[0].mtime, metas[0].mtime_nsec).unwrap();
        fs::write(data.join("g"), b"new").unwrap();
        keep_mtime();
        let (spool, trailer) = spooled(&root, &metas, None);
        let got = record_v(&root, spool, &trailer);
        assert!(got.bases.is_empty());
        assert_eq!(got.warnings.len(), 1);
        let w = &got.warnings[0];
        assert!(
            w.contains("`g` differs") && w.contains("on disk but not in the bundle"),
            "{w}"
        );
        assert!(w.contains("deltas onto this target will be refused"), "{w}");
        assert!(
            names(&root.bases_dir()).is_empty(),
            "no temporary file left"
        );

        // A mode changed since it was laid down.
        fs::remove_file(data.join("g")).unwrap();
        keep_mtime();
        let f = data.join("f");
        fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let mut metas = metas;
        metas[1].mode = 0o640;
        let (spool, trailer) = spooled(&root, &metas, None);
        let got = record_v(&root, spool, &trailer);
        assert!(got.bases.is_empty());
        assert!(
            got.warnings[0].contains("mode 0600 on disk, 0640 expected"),
            "{:?}",
            got.warnings
        );
    }

    #[test]
    fn a_tree_digest_the_source_disagrees_with_is_a_loud_warning() {
        let (_tmp, root, metas) = volume();
        let (spool, trailer) = spooled(&root, &metas, Some("00"));
        let got = record_v(&root, spool, &trailer);
        assert!(got.bases.is_empty());
        assert_eq!(got.warnings.len(), 1);
        assert!(
            got.warnings[0].starts_with("BUG: volume `v`: the bundle's tree digest (00)"),
            "{:?}",
            got.warnings
        );
        assert!(!root.base_manifest("v").exists());
    }

    #[test]
    fn a_round_id_volmig_does_not_write_records_nothing() {
        let (_tmp, root, metas) = volume();
        let (spool, trailer) = spooled(&root, &metas, None);
        let data = root.volume_data_dir("v");
        let got = record(
            &root,
            spool,
            "../x",
            &trailer,
            &["v".into()],
            &|_| data.clone(),
            &|_| None,
        );
        assert!(got.bases.is_empty());
        assert!(got.warnings[0].contains("round id"), "{:?}", got.warnings);
        assert!(!root.bases_dir().exists());
    }

    #[test]
    fn forgetting_removes_only_the_named_volumes_bases() {
        let (_tmp, root, _) = volume();
        fs::create_dir(root.bases_dir()).unwrap();
        for v in ["a", "b"] {
            fs::write(root.base_manifest(v), b"x").unwrap();
        }
        assert!(forget(&root, ["a", "c"].into_iter()).is_empty());
        assert_eq!(names(&root.bases_dir()), ["b.manifest"]);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}
