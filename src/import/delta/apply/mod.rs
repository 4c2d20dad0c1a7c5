//! Carrying out a delta's operations on the target, in place, under a
//! rollback journal (`ops::DeltaJournal`), as a database's rollback
//! journal does: what undoes each operation is recorded and made durable
//! before the first change (`prepare`); the operations run in bundle
//! order (`apply`); a failure, or a crash found by the next run while the
//! journal says `applying`, undoes them in reverse (`rollback`), each
//! undo step checking what is there so that it can run again after a
//! crash of its own.
//!
//! Every path under a volume is reached beneath the volume's `_data`
//! descriptor with no symlink followed (`crate::beneath`), and changed by
//! `*at` calls relative to its parent's descriptor.

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::FileStat;

use super::ops::{Added, Attrs, Before, DeltaJournal, Op, OpKind, Touched};
use crate::beneath::DirFd;
use crate::bundle::delta::chunk_len;
use crate::dataroot::DataRoot;
use crate::manifest::CHUNK;

mod rollback;
pub use rollback::rollback;

/// Where an operation's path is: its parent directory (opened beneath the
/// volume) and its name there.
struct At {
    parent: DirFd,
    name: CString,
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn nix_err(what: impl std::fmt::Display) -> impl FnOnce(nix::errno::Errno) -> String {
    move |e| format!("{what}: {e}")
}

/// The parent of `rel` beneath `data`, and its last name; `None` when
/// the parent does not exist (yet).
fn locate(data: &DirFd, rel: &[u8]) -> Result<Option<At>, String> {
    if rel.is_empty() {
        // `_data` itself: changed in place, as `.` of its own descriptor.
        let parent = data.open_dir(Path::new(".")).map_err(|e| e.to_string())?;
        return Ok(Some(At {
            parent,
            name: CString::new(".").unwrap_or_default(),
        }));
    }
    let (dir, name) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    let dir_path = match dir.is_empty() {
        true => Path::new("."),
        false => Path::new(OsStr::from_bytes(dir)),
    };
    let parent = match data.open_dir(dir_path) {
        Ok(p) => p,
        // Not there yet, or not a directory yet: an earlier operation of
        // the delta makes it one.
        Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::ENOTDIR)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let name = CString::new(name).map_err(|_| "a name with a NUL byte".to_string())?;
    Ok(Some(At { parent, name }))
}

fn stat_at(at: &At) -> Result<Option<FileStat>, String> {
    stat_in(&at.parent, &at.name)
}

/// The stat of `name` in `parent` (`None`: nothing there), no symlink
/// followed.
pub(super) fn stat_in(parent: &DirFd, name: &std::ffi::CStr) -> Result<Option<FileStat>, String> {
    match nix::sys::stat::fstatat(
        Some(parent.file().as_raw_fd()),
        name,
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => Ok(Some(st)),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(format!("{}: {e}", parent.path().display())),
    }
}

/// The stat of `rel` beneath `data` (`None`: nothing there, or no
/// directory to hold it).
pub(super) fn stat_beneath(data: &DirFd, rel: &[u8]) -> Result<Option<FileStat>, String> {
    match locate(data, rel)? {
        Some(at) => stat_at(&at),
        None => Ok(None),
    }
}

/// The open descriptors of one import's staging.
pub struct Staging {
    pub dir: PathBuf,
    staged: File,
    undo: File,
}

impl Staging {
    pub fn open(dir: &Path) -> Result<Staging, String> {
        let open = |sub: &str| {
            let p = dir.join(sub);
            File::open(&p).map_err(io_err(p.display()))
        };
        Ok(Staging {
            dir: dir.to_path_buf(),
            staged: open("staged")?,
            undo: open("undo")?,
        })
    }

    fn undo_path(&self, n: u64) -> PathBuf {
        self.dir.join("undo").join(n.to_string())
    }

    /// Where a volume the round adds is built.
    pub fn added_dir(&self, vol: &str) -> PathBuf {
        self.dir.join("added").join(vol)
    }
}

fn num(n: u64) -> CString {
    // Digits only: no NUL.
    CString::new(n.to_string()).unwrap_or_default()
}

fn rename(from: (&File, &CString), to: (&File, &CString)) -> Result<(), String> {
    nix::fcntl::renameat(
        Some(from.0.as_raw_fd()),
        from.1.as_c_str(),
        Some(to.0.as_raw_fd()),
        to.1.as_c_str(),
    )
    .map_err(nix_err("rename"))
}

/// Opens each volume's `_data` once: the target's, or for a volume the
/// round adds, the one it is built in (`Staging::added_dir`).
struct Volumes<'a> {
    root: &'a DataRoot,
    staging: &'a Staging,
    added: BTreeSet<String>,
    open: std::collections::BTreeMap<String, DirFd>,
}

impl<'a> Volumes<'a> {
    fn new(root: &'a DataRoot, staging: &'a Staging, added: &[Added]) -> Volumes<'a> {
        Volumes {
            root,
            staging,
            added: added.iter().map(|a| a.vol.clone()).collect(),
            open: Default::default(),
        }
    }

    fn dir_of(&self, vol: &str) -> PathBuf {
        match self.added.contains(vol) {
            true => self.staging.added_dir(vol),
            false => self.root.volume_dir(vol),
        }
    }

    fn data(&mut self, vol: &str) -> Result<&DirFd, String> {
        if !self.open.contains_key(vol) {
            let dir = DirFd::open(&self.dir_of(vol).join("_data")).map_err(|e| e.to_string())?;
            self.open.insert(vol.to_string(), dir);
        }
        self.open.get(vol).ok_or_else(|| format!("volume `{vol}`"))
    }

    /// The volume directory (for opts.json).
    fn volume_dir(&self, vol: &str) -> Result<DirFd, String> {
        DirFd::open(&self.dir_of(vol)).map_err(|e| e.to_string())
    }

    fn locate(&mut self, op: &Op) -> Result<Option<At>, String> {
        if let OpKind::Opts = op.kind {
            return Ok(Some(At {
                parent: self.volume_dir(&op.vol)?,
                name: CString::new("opts.json").unwrap_or_default(),
            }));
        }
        let rel = op.rel();
        let data = self.data(&op.vol)?;
        locate(data, &rel)
    }
}

/// Records what each operation will find and replace, saves a patched
/// file's old bytes, and lists the directories whose mtimes the renames
/// will move. Changes nothing on the target.
pub fn prepare(
    root: &DataRoot,
    staging: &Staging,
    added: &[Added],
    ops: &mut [Op],
) -> Result<Vec<Touched>, String> {
    let mut vols = Volumes::new(root, staging, added);
    let set_by_ops: BTreeSet<(String, String)> = ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Dir { .. }))
        .map(|o| (o.vol.clone(), o.path.clone()))
        .collect();
    let mut parents: BTreeSet<(String, Vec<u8>)> = BTreeSet::new();
    for op in ops.iter_mut() {
        op.before = Some(before(&mut vols, staging, op)?);
        if let OpKind::Put = op.kind {
            let p = staging.dir.join("staged").join(op.n.to_string());
            op.staged_ino = std::fs::symlink_metadata(&p).ok().map(|m| m.ino());
        }
        if !matches!(op.kind, OpKind::Opts) {
            let rel = op.rel();
            let parent = match rel.iter().rposition(|&b| b == b'/') {
                Some(i) => rel[..i].to_vec(),
                None => Vec::new(),
            };
            let changes_parent = !matches!(op.before, Some(Before::InPlace { .. }))
                || matches!(op.kind, OpKind::Dir { .. });
            // An added volume's directories are all set by its own ops.
            if changes_parent
                && !vols.added.contains(&op.vol)
                && !set_by_ops.contains(&(op.vol.clone(), crate::bundle::hex(&parent)))
            {
                parents.insert((op.vol.clone(), parent));
            }
        }
    }
    let mut touched = Vec::new();
    for (vol, rel) in parents {
        let data = vols.data(&vol)?;
        let dir = match rel.is_empty() {
            true => data.open_dir(Path::new(".")),
            false => data.open_dir(Path::new(OsStr::from_bytes(&rel))),
        };
        // A parent the delta creates or replaces is set by its own op.
        let Ok(dir) = dir else { continue };
        let m = dir
            .file()
            .metadata()
            .map_err(io_err(dir.path().display()))?;
        touched.push(Touched {
            vol,
            path: crate::bundle::hex(&rel),
            mtime: (m.mtime(), m.mtime_nsec() as u32),
        });
    }
    Ok(touched)
}

/// What operation `op` will find at its path (a patched file's old bytes
/// saved on the way).
fn before(vols: &mut Volumes<'_>, staging: &Staging, op: &Op) -> Result<Before, String> {
    let at = vols.locate(op)?;
    let st = match &at {
        Some(at) => stat_at(at)?,
        None => None,
    };
    let is_dir = st
        .as_ref()
        .is_some_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR);
    Ok(match (&op.kind, &st) {
        (_, None) => Before::Absent,
        (OpKind::Dir { .. }, Some(_)) if is_dir => {
            let dir = at
                .as_ref()
                .ok_or("no parent")?
                .parent
                .open_dir(Path::new(OsStr::from_bytes(
                    at.as_ref().ok_or("no parent")?.name.as_bytes(),
                )))
                .map_err(|e| e.to_string())?;
            Before::InPlace {
                attrs: Attrs::of_file(dir.file()).map_err(io_err(dir.path().display()))?,
                size: 0,
            }
        }
        (
            OpKind::Patch {
                size, data, zero, ..
            },
            Some(st),
        ) => {
            let at = at.as_ref().ok_or("no parent")?;
            let file = at
                .parent
                .open_file(
                    Path::new(OsStr::from_bytes(at.name.as_bytes())),
                    OFlag::O_RDONLY,
                )
                .map_err(|e| e.to_string())?;
            save_old_bytes(
                &file,
                st.st_size as u64,
                *size,
                data,
                zero,
                &staging.undo_path(op.n),
            )?;
            Before::InPlace {
                attrs: Attrs::of_file(&file).map_err(io_err("a patched file"))?,
                size: st.st_size as u64,
            }
        }
        (_, Some(st)) => Before::Aside { ino: st.st_ino },
    })
}

/// Saves the bytes a patch overwrites or cuts: each touched chunk within
/// the old size, and the tail past the new size, as (offset, length,
/// bytes) records.
fn save_old_bytes(
    file: &File,
    old_size: u64,
    size: u64,
    data: &[(u64, u64)],
    zero: &[(u64, u64)],
    to: &Path,
) -> Result<(), String> {
    let mut out = io::BufWriter::new(File::create(to).map_err(io_err(to.display()))?);
    let mut ranges: Vec<(u64, u64)> = data
        .iter()
        .chain(zero)
        .flat_map(|&(a, b)| a..=b)
        .map(|i| (i * CHUNK, chunk_len(i, old_size)))
        .filter(|&(_, len)| len > 0)
        .collect();
    if size < old_size {
        ranges.push((size, old_size - size));
    }
    let mut buf = vec![0u8; CHUNK as usize];
    for (off, len) in ranges {
        out.write_all(&off.to_le_bytes())
            .and_then(|_| out.write_all(&len.to_le_bytes()))
            .map_err(io_err(to.display()))?;
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK) as usize;
            file.read_exact_at(&mut buf[..n], off + done)
                .map_err(io_err("a patched file"))?;
            out.write_all(&buf[..n]).map_err(io_err(to.display()))?;
            done += n as u64;
        }
    }
    let f = out
        .into_inner()
        .map_err(|e| format!("{}: {}", to.display(), e.error()))?;
    f.sync_all().map_err(io_err(to.display()))
}

/// Carries out every operation, then the directories' attributes (deepest
/// first: a rename inside moves its parent's mtime), then syncs.
pub fn apply(root: &DataRoot, staging: &Staging, journal: &DeltaJournal) -> Result<(), String> {
    let mut vols = Volumes::new(root, staging, &journal.added);
    for op in &journal.ops {
        apply_one(&mut vols, staging, op)
            .map_err(|e| format!("`{}`: {e}", super::base::shown(root, &op.vol, &op.rel())))?;
    }
    for op in journal.ops.iter().rev() {
        if let OpKind::Dir { attrs } = &op.kind {
            let dir = open_dir(&mut vols, op)?;
            attrs
                .restore(dir.file())
                .map_err(io_err(dir.path().display()))?;
        }
    }
    restore_touched(&mut vols, &journal.touched)?;
    // Each added volume, whole, into `volumes/` (durable first: it is
    // finished once it is there).
    let staged = File::open(&staging.dir).map_err(io_err(staging.dir.display()))?;
    nix::unistd::syncfs(staged.as_raw_fd()).map_err(nix_err("syncfs"))?;
    for a in &journal.added {
        let dir = vols.volume_dir(&a.vol)?;
        a.attrs
            .restore(dir.file())
            .map_err(io_err(dir.path().display()))?;
        nix::fcntl::renameat2(
            None,
            &staging.added_dir(&a.vol),
            None,
            &root.volume_dir(&a.vol),
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(nix_err(format!(
            "volume `{}` into {}",
            a.vol,
            root.volumes_dir().display()
        )))?;
    }
    sync(root)
}

fn open_dir(vols: &mut Volumes<'_>, op: &Op) -> Result<DirFd, String> {
    let rel = op.rel();
    let data = vols.data(&op.vol)?;
    match rel.is_empty() {
        true => data.open_dir(Path::new(".")),
        false => data.open_dir(Path::new(OsStr::from_bytes(&rel))),
    }
    .map_err(|e| e.to_string())
}

fn restore_touched(vols: &mut Volumes<'_>, touched: &[Touched]) -> Result<(), String> {
    let mut deepest_first: Vec<&Touched> = touched.iter().collect();
    deepest_first.sort_by_key(|t| std::cmp::Reverse(t.path.len()));
    for t in deepest_first {
        let rel = super::base::rel_of(&t.path);
        let data = vols.data(&t.vol)?;
        let dir = match rel.is_empty() {
            true => data.open_dir(Path::new(".")),
            false => data.open_dir(Path::new(OsStr::from_bytes(&rel))),
        };
        let Ok(dir) = dir else { continue };
        crate::fileattrs::set_mtime_fd(std::os::fd::AsFd::as_fd(dir.file()), t.mtime)
            .map_err(io_err(dir.path().display()))?;
    }
    Ok(())
}

fn sync(root: &DataRoot) -> Result<(), String> {
    let dir = File::open(root.volumes_dir()).map_err(io_err(root.volumes_dir().display()))?;
    nix::unistd::syncfs(dir.as_raw_fd()).map_err(nix_err("syncfs"))
}

fn apply_one(vols: &mut Volumes<'_>, staging: &Staging, op: &Op) -> Result<(), String> {
    let at = vols
        .locate(op)?
        .ok_or("its directory is missing on the target")?;
    let n = num(op.n);
    let aside = matches!(op.before, Some(Before::Aside { .. }));
    match &op.kind {
        OpKind::Put | OpKind::Opts => {
            if aside {
                rename((at.parent.file(), &at.name), (&staging.undo, &n))?;
            }
            rename((&staging.staged, &n), (at.parent.file(), &at.name))
        }
        OpKind::Delete => rename((at.parent.file(), &at.name), (&staging.undo, &n)),
        OpKind::Link { target } => {
            if aside {
                rename((at.parent.file(), &at.name), (&staging.undo, &n))?;
            }
            let target = super::base::rel_of(target);
            let data = vols.data(&op.vol)?;
            let to = locate(data, &target)?.ok_or("the hardlink's target is missing")?;
            nix::unistd::linkat(
                Some(to.parent.file().as_raw_fd()),
                to.name.as_c_str(),
                Some(at.parent.file().as_raw_fd()),
                at.name.as_c_str(),
                nix::fcntl::AtFlags::empty(),
            )
            .map_err(nix_err("link"))
        }
        OpKind::Dir { .. } => {
            if aside {
                rename((at.parent.file(), &at.name), (&staging.undo, &n))?;
            }
            if !matches!(op.before, Some(Before::InPlace { .. })) {
                nix::sys::stat::mkdirat(
                    Some(at.parent.file().as_raw_fd()),
                    at.name.as_c_str(),
                    nix::sys::stat::Mode::from_bits_truncate(0o700),
                )
                .map_err(nix_err("mkdir"))?;
            }
            Ok(())
        }
        OpKind::Patch {
            size,
            data,
            zero,
            attrs,
        } => {
            let file = at
                .parent
                .open_file(
                    Path::new(OsStr::from_bytes(at.name.as_bytes())),
                    OFlag::O_WRONLY,
                )
                .map_err(|e| e.to_string())?;
            let staged = File::open(staging.dir.join("staged").join(op.n.to_string()))
                .map_err(io_err("the staged patch"))?;
            patch(&file, &staged, *size, data, zero)?;
            attrs.restore(&file).map_err(io_err("a patched file"))
        }
    }
}

/// Writes a patch's chunks into `file`: the data ones from `staged` in
/// order, the zero ones as holes, then cuts or grows it to `size`.
fn patch(
    file: &File,
    staged: &File,
    size: u64,
    data: &[(u64, u64)],
    zero: &[(u64, u64)],
) -> Result<(), String> {
    let old = file.metadata().map_err(io_err("a patched file"))?.len();
    if size < old {
        file.set_len(size).map_err(io_err("truncate"))?;
    }
    let mut buf = vec![0u8; CHUNK as usize];
    let mut from = 0u64;
    for i in data.iter().flat_map(|&(a, b)| a..=b) {
        let len = chunk_len(i, size) as usize;
        staged
            .read_exact_at(&mut buf[..len], from)
            .map_err(io_err("the staged patch"))?;
        file.write_all_at(&buf[..len], i * CHUNK)
            .map_err(io_err("write"))?;
        from += len as u64;
    }
    for i in zero.iter().flat_map(|&(a, b)| a..=b) {
        let (off, len) = (i * CHUNK, chunk_len(i, size));
        let punched = nix::fcntl::fallocate(
            file.as_raw_fd(),
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            off as i64,
            len as i64,
        );
        if punched.is_err() {
            buf[..len as usize].fill(0);
            file.write_all_at(&buf[..len as usize], off)
                .map_err(io_err("write"))?;
        }
    }
    file.set_len(size).map_err(io_err("truncate"))
}
