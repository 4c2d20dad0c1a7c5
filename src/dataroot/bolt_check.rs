//! A structural check of a bolt database before bbolt-rs is let near it.
//!
//! # Security
//! bbolt-rs (like Go's bbolt) trusts the file: page ids, element offsets
//! and sizes are followed as pointers into the memory map, so a corrupt or
//! hostile metadata.db makes it read outside the mapping and the process
//! dies with SIGSEGV (found by the property tests: one random byte flip in
//! 400 did it), which no `catch_unwind` can turn into an error. So every
//! page bbolt would visit from the chosen meta page is checked here first,
//! by reads of the file (no mapping): both meta pages' magic, version and
//! checksum as bbolt checks them; every page id below the high-water mark
//! and inside the file; page types; every element's key and value inside
//! its page; bucket headers and inline buckets; the freelist; no cycles,
//! bounded depth. A file that passes is one bbolt can walk; one that fails
//! is reported as corrupt, as dockerd's bolt would (it panics or refuses).
//!
//! Hand-written because bbolt-rs offers no checked open; the layout is
//! bbolt's on-disk format (page header 16 bytes, meta, branch and leaf
//! elements of 16 bytes each), which is stable since bolt 1.0.

use std::fs::File;
use std::os::unix::fs::FileExt;

const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const FREELIST: u16 = 0x10;
const BUCKET_LEAF: u32 = 0x01;
const NO_FREELIST: u64 = u64::MAX;
/// Deeper than any tree a database of the size volmig reads can hold.
const MAX_DEPTH: usize = 64;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// FNV-1a, 64 bits: bolt's meta checksum.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    page_size: u64,
    root: u64,
    freelist: u64,
    high_water: u64,
    txid: u64,
}

/// The meta at `offset`, if it validates as bbolt validates it.
fn read_meta(file: &File, offset: u64) -> Option<Meta> {
    let mut b = [0u8; PAGE_HEADER + 64];
    file.read_exact_at(&mut b, offset).ok()?;
    let m = &b[PAGE_HEADER..];
    if u32_at(m, 0)? != MAGIC || u32_at(m, 4)? != VERSION || u64_at(m, 56)? != fnv1a64(&m[..56]) {
        return None;
    }
    Some(Meta {
        page_size: u64::from(u32_at(m, 8)?),
        root: u64_at(m, 16)?,
        freelist: u64_at(m, 32)?,
        high_water: u64_at(m, 40)?,
        txid: u64_at(m, 48)?,
    })
}

struct Checker<'a> {
    file: &'a File,
    size: u64,
    meta: Meta,
    /// Pages already walked: a second visit is a cycle or a shared page.
    seen: Vec<bool>,
}

impl Checker<'_> {
    /// Reads page `id` whole (with its overflow pages), checked to lie
    /// inside the file and below the high-water mark.
    fn page(&mut self, id: u64) -> Result<Vec<u8>, String> {
        let ps = self.meta.page_size;
        if id < 2 || id >= self.meta.high_water {
            return Err(format!("page {id} is outside the database"));
        }
        let slot = usize::try_from(id).map_err(|_| format!("page {id} is too large"))?;
        if self.seen.get(slot).copied().unwrap_or(true) {
            return Err(format!("page {id} is reached twice"));
        }
        self.seen[slot] = true;
        let mut head = [0u8; PAGE_HEADER];
        self.file
            .read_exact_at(&mut head, id * ps)
            .map_err(|e| format!("page {id}: {e}"))?;
        let overflow = u64::from(u32_at(&head, 12).unwrap_or(0));
        let end = id
            .checked_add(overflow)
            .and_then(|last| last.checked_add(1))
            .and_then(|n| n.checked_mul(ps))
            .ok_or_else(|| format!("page {id} overflows"))?;
        if end > self.size || id + overflow >= self.meta.high_water {
            return Err(format!("page {id} runs past the end of the file"));
        }
        if u64_at(&head, 0) != Some(id) {
            return Err(format!("page {id} says it is another page"));
        }
        for extra in id + 1..=id + overflow {
            if let Some(s) = usize::try_from(extra)
                .ok()
                .and_then(|i| self.seen.get_mut(i))
            {
                *s = true;
            }
        }
        let mut bytes = vec![0u8; (end - id * ps) as usize];
        self.file
            .read_exact_at(&mut bytes, id * ps)
            .map_err(|e| format!("page {id}: {e}"))?;
        Ok(bytes)
    }

    /// A bucket's tree from its root page.
    fn tree(&mut self, id: u64, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("the tree is too deep".into());
        }
        let page = self.page(id)?;
        self.node(&page, id, depth)
    }

    /// A branch or leaf page (or an inline bucket's page) in `page`.
    fn node(&mut self, page: &[u8], id: u64, depth: usize) -> Result<(), String> {
        let bad = |what: &str| format!("page {id}: {what}");
        let flags = u16_at(page, 8).ok_or_else(|| bad("truncated header"))?;
        let count = usize::from(u16_at(page, 10).ok_or_else(|| bad("truncated header"))?);
        if count.checked_mul(ELEMENT).map(|n| n + PAGE_HEADER) > Some(page.len()) {
            return Err(bad("more elements than fit"));
        }
        for i in 0..count {
            let at = PAGE_HEADER + i * ELEMENT;
            let field = |k| u32_at(page, at + k).map(|v| v as usize);
            match flags {
                BRANCH => {
                    let (pos, ksize) = (field(0), field(4));
                    let child = u64_at(page, at + 8);
                    let (Some(pos), Some(ksize), Some(child)) = (pos, ksize, child) else {
                        return Err(bad("truncated element"));
                    };
                    if at.checked_add(pos).and_then(|p| p.checked_add(ksize)) > Some(page.len()) {
                        return Err(bad("a key lies outside the page"));
                    }
                    self.tree(child, depth + 1)?;
                }
                LEAF => {
                    let (Some(eflags), Some(pos), Some(ksize), Some(vsize)) =
                        (field(0), field(4), field(8), field(12))
                    else {
                        return Err(bad("truncated element"));
                    };
                    let key = at.checked_add(pos).ok_or_else(|| bad("overflow"))?;
                    let value = key.checked_add(ksize).ok_or_else(|| bad("overflow"))?;
                    let end = value.checked_add(vsize).ok_or_else(|| bad("overflow"))?;
                    if end > page.len() {
                        return Err(bad("a key or value lies outside the page"));
                    }
                    if eflags as u32 & BUCKET_LEAF != 0 {
                        self.bucket(&page[value..end], id, depth)?;
                    }
                }
                _ => return Err(bad("neither a branch nor a leaf page")),
            }
        }
        Ok(())
    }

    /// A bucket header in a leaf value: a root page, or an inline page.
    fn bucket(&mut self, value: &[u8], id: u64, depth: usize) -> Result<(), String> {
        let root = u64_at(value, 0).ok_or_else(|| format!("page {id}: short bucket header"))?;
        if value.len() < 16 {
            return Err(format!("page {id}: short bucket header"));
        }
        if root != 0 {
            return self.tree(root, depth + 1);
        }
        let inline = &value[16..];
        if u16_at(inline, 8) != Some(LEAF) {
            return Err(format!("page {id}: an inline bucket is not a leaf"));
        }
        if depth > MAX_DEPTH {
            return Err("the tree is too deep".into());
        }
        self.node(inline, id, depth + 1)
    }

    fn freelist(&mut self) -> Result<(), String> {
        let id = self.meta.freelist;
        if id == NO_FREELIST {
            return Ok(());
        }
        let page = self.page(id)?;
        if u16_at(&page, 8) != Some(FREELIST) {
            return Err(format!("page {id}: the freelist is not a freelist page"));
        }
        let mut count = u64::from(u16_at(&page, 10).unwrap_or(0));
        let mut start = PAGE_HEADER;
        if count == 0xFFFF {
            count = u64_at(&page, PAGE_HEADER).unwrap_or(u64::MAX);
            start += 8;
        }
        let need = count
            .checked_mul(8)
            .and_then(|n| n.checked_add(start as u64));
        if need.is_none_or(|n| n > page.len() as u64) {
            return Err(format!("page {id}: the freelist does not fit its page"));
        }
        Ok(())
    }
}

/// Checks that bbolt can open and walk `file` (of `size` bytes) without
/// reading outside it. `Ok` for a 0-byte file (bbolt initializes it).
pub fn check(file: &File, size: u64) -> Result<(), String> {
    if size == 0 {
        return Ok(());
    }
    let first = read_meta(file, 0);
    // The second meta page sits one page further, at the first's size (or
    // bbolt's default when the first is broken).
    let second_at = first.map_or(4096, |m| m.page_size);
    let second = read_meta(file, second_at);
    let (a, b) = match (first, second) {
        (Some(x), Some(y)) if y.txid > x.txid => (Some(y), Some(x)),
        (x, y) => (x.or(y), y.and(x)),
    };
    let meta = a.ok_or("no valid meta page (bad magic, version or checksum)")?;
    for m in [Some(meta), b].into_iter().flatten() {
        if m.page_size < 512 || m.page_size > 65536 || !m.page_size.is_power_of_two() {
            return Err(format!("page size {} is not one bolt writes", m.page_size));
        }
    }
    if b.is_some_and(|b| b.page_size != meta.page_size) {
        return Err("the two meta pages disagree on the page size".into());
    }
    let pages = size / meta.page_size;
    if meta.high_water < 2 || meta.high_water > pages {
        return Err(format!(
            "the database claims {} pages but the file holds {pages}",
            meta.high_water
        ));
    }
    let mut c = Checker {
        file,
        size,
        meta,
        seen: vec![false; pages as usize],
    };
    c.freelist()?;
    c.tree(meta.root, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn check_path(path: &Path) -> Result<(), String> {
        let f = File::open(path).unwrap();
        let size = f.metadata().unwrap().len();
        check(&f, size)
    }

    #[test]
    fn databases_written_by_dockerd_and_by_volmig_pass() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut checked = 0;
        for entry in std::fs::read_dir(&fixtures).unwrap() {
            let db = entry.unwrap().path().join("volumes/metadata.db");
            if db.exists() {
                check_path(&db).unwrap_or_else(|e| panic!("{}: {e}", db.display()));
                checked += 1;
            }
        }
        assert!(checked >= 2, "fixtures with a metadata.db: {checked}");
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("volumes/metadata.db");
        std::fs::create_dir(dir.path().join("volumes")).unwrap();
        let records: Vec<_> = (0..3000)
            .map(|i| super::super::metadata::VolumeRecord {
                name: format!("v{i:05}"),
                driver: "local".into(),
                labels: Some([("k".to_string(), "x".repeat(300))].into()),
                options: None,
            })
            .collect();
        super::super::metadata::write_records(&db, &records).unwrap();
        check_path(&db).unwrap();
    }

    /// The byte flip the property tests found: bbolt-rs crashed with
    /// SIGSEGV walking it; the check refuses it first.
    #[test]
    fn a_flipped_page_id_is_refused_not_followed() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/source/volumes/metadata.db");
        let good = std::fs::read(&src).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.db");
        let mut refused = 0;
        // Every byte of every non-meta page set to a large value, one at a
        // time: the check must never pass a file whose structure changed
        // in a way bbolt would follow out of the file.
        for at in (8192..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[at] = 0xF7;
            std::fs::write(&db, &bad).unwrap();
            if check_path(&db).is_err() {
                refused += 1;
            } else {
                // What passes must be walkable: bbolt reads it.
                super::super::metadata::read_store(&db).ok();
            }
        }
        assert!(refused > 0);
    }
}
