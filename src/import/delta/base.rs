//! The target side of a delta's base: which round each volume holds
//! (`<data-root>/volmig-bases/<volume>.manifest`, recorded by the import
//! of that round), whether the volume is still exactly that round (a stat
//! walk against the manifest), and what the volume is once the delta is
//! applied (the base's entries merged with the delta's operations, whose
//! tree digest must be the source's before anything is changed).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;

use super::ops::{Op, OpKind};
use crate::bundle::{unhex, BundleHeader, EntryKind};
use crate::dataroot::DataRoot;
use crate::import::base::walk::{Landed, LandedWalk};
use crate::manifest::chunks::Sha;
use crate::manifest::{
    chunks::content_from_chunks, path_order, Entry, ManifestReader, Record, TreeDigest, CHUNK,
};

/// Refuses a delta whose base is not the round every volume of the target
/// holds (by the recorded manifests' round ids).
///
/// Returns the volumes the round adds: on neither side of the base, not
/// on the target at all (whether the delta carries them whole is proven
/// by the tree digest, `result_tree`).
pub fn check_rounds(
    root: &DataRoot,
    header: &BundleHeader,
) -> Result<BTreeSet<String>, Vec<String>> {
    let Some(base) = header.round.as_ref().and_then(|r| r.base.as_deref()) else {
        return Err(vec!["not a delta bundle".into()]);
    };
    if root.id_map().is_some() {
        return Err(vec!["deltas into a userns-remapped data-root are not supported yet: import a full bundle (export without --since)".into()]);
    }
    let mut problems = Vec::new();
    let mut added = BTreeSet::new();
    for v in &header.volumes {
        let path = root.base_manifest(&v.name);
        let held = match ManifestReader::open(&path) {
            Ok(r) => r.header().bundle.clone(),
            Err(_) if root.volume_dir(&v.name).symlink_metadata().is_err() && !path.exists() => {
                added.insert(v.name.clone());
                continue;
            }
            Err(e) => {
                problems.push(format!("volume `{}` has no recorded round ({e}): import a full bundle exported with --manifest-out first", v.name));
                continue;
            }
        };
        let round = header.round.as_ref().map(|r| r.id.as_str());
        if Some(held.as_str()) == round {
            // An import of this delta already applied it (perhaps one
            // interrupted, that recovery just finished).
            problems.push(format!(
                "volume `{}` already holds round {held}: this delta was applied",
                v.name
            ));
        } else if held != base {
            problems.push(format!(
                "volume `{}` holds round {held}, and this delta applies onto round {base}: import the deltas in order, or a full bundle",
                v.name
            ));
        }
    }
    match problems.is_empty() {
        true => Ok(added),
        false => Err(problems),
    }
}

/// Most recorded bases looked at for volumes a round left out.
const MAX_BASES_LISTED: usize = 100_000;

/// The volumes of the target that hold round `base` (the delta's) but are
/// not in the delta: the source no longer exports them. Left as they are
/// (never deleted: the target's copy may be the only one), and named.
pub fn left_out(root: &DataRoot, base: &str, header: &BundleHeader) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(root.bases_dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten().take(MAX_BASES_LISTED) {
        let name = e.file_name();
        let Some(vol) = name.to_str().and_then(|n| n.strip_suffix(".manifest")) else {
            continue;
        };
        if header.volumes.iter().any(|v| v.name == vol) || !root.volume_dir(vol).is_dir() {
            continue;
        }
        if ManifestReader::open(&e.path()).is_ok_and(|r| r.header().bundle == base) {
            out.push(vol.to_string());
        }
    }
    out.sort();
    out
}

/// Checks that volume `vol` of the target is exactly its recorded base:
/// every entry there, none more, each with the recorded stat. The error
/// names the first path that differs.
pub fn check_target(root: &DataRoot, vol: &str) -> Result<(), String> {
    let mut base = CheckedBase::open(root, vol)?;
    while base.next()?.is_some() {}
    Ok(())
}

/// A volume's base manifest read entry by entry, each checked against the
/// target's stat as it is read: the walk of the target runs alongside, in
/// the same order, so that checking the target and merging the delta
/// onto its base read the manifest and walk the tree once between them,
/// not once each (for 100,000 entries a pass is a decompression, 100,000
/// JSON lines parsed and 100,000 `fstatat`s).
struct CheckedBase<'a> {
    root: &'a DataRoot,
    vol: &'a str,
    base: ManifestReader,
    walk: LandedWalk,
    now: Option<Landed>,
}

impl<'a> CheckedBase<'a> {
    fn open(root: &'a DataRoot, vol: &'a str) -> Result<CheckedBase<'a>, String> {
        let base = open_base(root, vol)?;
        let mut walk = LandedWalk::open(&root.volume_data_dir(vol)).map_err(|e| e.to_string())?;
        let now = walk.next().map_err(|e| e.to_string())?;
        Ok(CheckedBase {
            root,
            vol,
            base,
            walk,
            now,
        })
    }

    fn changed(&self, rel: &[u8], what: &str) -> String {
        format!(
            "volume `{}` changed since its round was imported: `{}`: {what}; a delta applies only onto the exact round it was made from: import a full bundle (volmig export without --since)",
            self.vol,
            shown(self.root, self.vol, rel)
        )
    }

    /// The next base entry, once the target was found to have it with
    /// its recorded stat (`None`: the base ended, and so did the target).
    fn next(&mut self) -> Result<Option<Entry>, String> {
        let b = next_entry(&mut self.base)?;
        match (b, self.now.take()) {
            (None, None) => Ok(None),
            (Some(b), None) => Err(self.changed(&b.path, "it is gone")),
            (None, Some(l)) => Err(self.changed(&l.path, "it is not in the round")),
            (Some(b), Some(l)) => match path_order(&b.path, &l.path) {
                std::cmp::Ordering::Less => Err(self.changed(&b.path, "it is gone")),
                std::cmp::Ordering::Greater => Err(self.changed(&l.path, "it is not in the round")),
                std::cmp::Ordering::Equal => {
                    if let Some(what) = l.differs(&b, true) {
                        return Err(self.changed(&l.path, &what));
                    }
                    self.now = self.walk.next().map_err(|e| e.to_string())?;
                    Ok(Some(b))
                }
            },
        }
    }
}

/// The base manifest of `vol`, positioned at its entries.
pub fn open_base(root: &DataRoot, vol: &str) -> Result<ManifestReader, String> {
    let path = root.base_manifest(vol);
    let mut r = ManifestReader::open(&path).map_err(|e| e.to_string())?;
    match r.next().map_err(|e| e.to_string())? {
        Some(Record::Volume(v)) if v.volume == vol => Ok(r),
        _ => Err(format!(
            "`{}` does not describe volume `{vol}`",
            path.display()
        )),
    }
}

/// The next entry of a positioned base manifest (`None` at its end).
pub fn next_entry(r: &mut ManifestReader) -> Result<Option<Entry>, String> {
    match r.next().map_err(|e| e.to_string())? {
        Some(Record::Entry(e)) => Ok(Some(e)),
        _ => Ok(None),
    }
}

/// What a delta says each of its operations' paths becomes (for a patch:
/// everything but the content, which the base's chunks give).
pub type NewEntries = BTreeMap<u64, Entry>;

/// The volume once the operations are applied onto its base (none for a
/// volume the round `adds`), entry by entry in bundle order, to `out`.
/// Fails when the delta does not fit the base (a patch of a path that is
/// no file, a deletion of nothing).
pub fn merge_result(
    root: &DataRoot,
    vol: &str,
    adds: bool,
    ops: &[&Op],
    new: &NewEntries,
    patch_chunks: &BTreeMap<u64, Vec<[u8; 32]>>,
    out: &mut dyn FnMut(Entry, bool) -> Result<(), String>,
) -> Result<(), String> {
    let mut base = match adds {
        true => None,
        false => Some(open_base(root, vol)?),
    };
    let mut next_base = || match &mut base {
        Some(r) => next_entry(r),
        None => Ok(None),
    };
    merge(&mut next_base, ops, new, patch_chunks, out)
}

/// `merge_result` of the base entries `next_base` gives in order; `out`
/// is told whether an entry is an operation's (true) or the base's.
fn merge(
    next_base: &mut dyn FnMut() -> Result<Option<Entry>, String>,
    ops: &[&Op],
    new: &NewEntries,
    patch_chunks: &BTreeMap<u64, Vec<[u8; 32]>>,
    out: &mut dyn FnMut(Entry, bool) -> Result<(), String>,
) -> Result<(), String> {
    let mut b = next_base()?;
    let mut ops = ops
        .iter()
        .filter(|o| !matches!(o.kind, OpKind::Opts))
        .peekable();
    // A base directory gone (deleted or replaced): its subtree with it.
    let mut dead: Option<Vec<u8>> = None;
    let is_dead = |dead: &Option<Vec<u8>>, p: &[u8]| {
        dead.as_deref().is_some_and(|d| {
            p.len() > d.len() && p.starts_with(d) && (d.is_empty() || p[d.len()] == b'/')
        })
    };
    loop {
        let op_rel = ops.peek().map(|o| o.rel());
        let order = match (&b, &op_rel) {
            (None, None) => return Ok(()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(be), Some(p)) => path_order(&be.path, p),
        };
        match order {
            std::cmp::Ordering::Less => {
                if let Some(be) = b.take() {
                    if !is_dead(&dead, &be.path) {
                        out(be, false)?;
                    }
                }
                b = next_base()?;
            }
            std::cmp::Ordering::Equal | std::cmp::Ordering::Greater => {
                let Some(op) = ops.next() else { continue };
                let rel = op.rel();
                let old = match order {
                    std::cmp::Ordering::Equal => {
                        let old = b.take();
                        b = next_base()?;
                        old.filter(|o| !is_dead(&dead, &o.path))
                    }
                    _ => None,
                };
                let replaced_dir = old.as_ref().is_some_and(|o| o.kind == EntryKind::Dir);
                let show = String::from_utf8_lossy(&rel).into_owned();
                match &op.kind {
                    OpKind::Delete => {
                        if old.is_none() {
                            return Err(format!(
                                "the delta deletes `{show}`, which its base does not have"
                            ));
                        }
                        if replaced_dir {
                            dead = Some(rel);
                        }
                    }
                    OpKind::Patch {
                        size, data, zero, ..
                    } => {
                        let Some(old) = old.filter(|o| o.kind == EntryKind::File) else {
                            return Err(format!(
                                "the delta patches `{show}`, which is no file in its base"
                            ));
                        };
                        let mut e = new.get(&op.n).cloned().ok_or("a patch without its entry")?;
                        let (content, chunks) =
                            patched_content(&old, *size, data, zero, patch_chunks.get(&op.n))
                                .ok_or_else(|| {
                                    format!("the patch of `{show}` does not fit its base")
                                })?;
                        e.content = Some(content);
                        e.chunks = chunks;
                        out(e, true)?;
                    }
                    OpKind::Put | OpKind::Link { .. } | OpKind::Dir { .. } => {
                        if replaced_dir && !matches!(op.kind, OpKind::Dir { .. }) {
                            dead = Some(rel.clone());
                        }
                        let e = new
                            .get(&op.n)
                            .cloned()
                            .ok_or("an operation without its entry")?;
                        out(e, true)?;
                    }
                    OpKind::Opts => {}
                }
            }
        }
    }
}

/// The content digest of a patched file: the base's chunk digests with
/// the patch's in their places, cut or grown to `size`. `None` when a
/// chunk of the result is neither patched nor whole in the base.
fn patched_content(
    old: &Entry,
    size: u64,
    data: &[(u64, u64)],
    zero: &[(u64, u64)],
    new: Option<&Vec<[u8; 32]>>,
) -> Option<(Sha, Vec<Option<Sha>>)> {
    let count = size.div_ceil(CHUNK);
    let old_count = old.size.div_ceil(CHUNK);
    if old.chunks.len() as u64 != old_count {
        return None;
    }
    let mut new = new.map(|v| v.iter()).into_iter().flatten();
    let mut data = data.iter().flat_map(|&(a, b)| a..=b).peekable();
    let mut zero = zero.iter().flat_map(|&(a, b)| a..=b).peekable();
    let mut chunks: Vec<Option<[u8; 32]>> = Vec::with_capacity(count as usize);
    for i in 0..count {
        let len = crate::bundle::delta::chunk_len(i, size);
        if data.next_if_eq(&i).is_some() {
            chunks.push(Some(*new.next()?));
        } else if zero.next_if_eq(&i).is_some() {
            chunks.push(match len == CHUNK {
                true => None,
                false => Some(zeros_digest(len)),
            });
        } else if i < old_count && crate::bundle::delta::chunk_len(i, old.size) == len {
            chunks.push(*old.chunks.get(i as usize)?);
        } else {
            return None;
        }
    }
    if count <= 1 {
        // One chunk or less: its digest is the content's.
        let one = chunks
            .first()
            .copied()
            .flatten()
            .unwrap_or_else(|| zeros_digest(size));
        return Some((one, Vec::new()));
    }
    let content = content_from_chunks(&chunks);
    if count > crate::manifest::MAX_CHUNKS {
        chunks.clear();
    }
    Some((content, chunks))
}

fn zeros_digest(len: u64) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    crate::bundle::hash_zeros(&mut h, len);
    h.finalize().into()
}

/// The tree digest of the volume once the delta is applied; for a volume
/// the target has (not one the round `adds`), in the same pass over its
/// base, the check that the target is still exactly that base
/// (`check_target`). Errors of the check are as `check_target` words
/// them; a delta that does not fit its base is named with its volume.
pub fn result_tree(
    root: &DataRoot,
    vol: &str,
    adds: bool,
    ops: &[&Op],
    new: &NewEntries,
    patch_chunks: &BTreeMap<u64, Vec<[u8; 32]>>,
) -> Result<String, String> {
    let mut tree = TreeDigest::default();
    let mut add = |e: Entry, _: bool| {
        tree.add(&e);
        Ok(())
    };
    let misfit = |e: String| format!("volume `{vol}`: {e}");
    if adds {
        let mut none = || Ok(None);
        merge(&mut none, ops, new, patch_chunks, &mut add).map_err(misfit)?;
        return Ok(tree.hex());
    }
    let mut base = CheckedBase::open(root, vol)?;
    // A check error stops the merge as it is; a misfit is told only once
    // the rest of the target was checked (a changed target is the cause
    // a user must hear of first, as when the check ran on its own).
    let mut checked: Option<String> = None;
    let mut next_base = || {
        base.next().inspect_err(|e| {
            checked = Some(e.clone());
        })
    };
    let merged = merge(&mut next_base, ops, new, patch_chunks, &mut add);
    if let Some(e) = checked {
        return Err(e);
    }
    if let Err(e) = merged {
        while base.next()?.is_some() {}
        return Err(misfit(e));
    }
    Ok(tree.hex())
}

/// A path of the target for messages.
pub fn shown(root: &DataRoot, vol: &str, rel: &[u8]) -> String {
    let p = root.volume_data_dir(vol);
    match rel.is_empty() {
        true => p.display().to_string(),
        false => p
            .join(std::ffi::OsStr::from_bytes(rel))
            .display()
            .to_string(),
    }
}

/// Hex path to bytes (journal paths).
pub fn rel_of(hex: &str) -> Vec<u8> {
    unhex(hex).unwrap_or_default()
}
