//! The two entries only a delta bundle has (`docs/incremental.md`): a
//! deletion, and a patch of a large file's changed chunks. Both are
//! regular-file entries marked by PAX records; the mark is part of the
//! entry's description, so the trailer's entries digest covers it (a
//! patch turned into a deletion by editing its PAX records fails the
//! check like any altered metadata).

use std::fmt::Write as _;

use crate::manifest::CHUNK;

/// PAX key of a deletion (`1`).
pub const PAX_DELETE: &str = "VOLMIG.delete";
/// PAX key of a patch: the file's size after it.
pub const PAX_PATCH_SIZE: &str = "VOLMIG.patch.size";
/// PAX key of a patch: the chunks whose new bytes are the entry's data,
/// in order, as ranges of chunk indexes (`0-3,7`).
pub const PAX_PATCH_DATA: &str = "VOLMIG.patch.data";
/// PAX key of a patch: the chunks that are now zeros only (holes), with
/// no data in the entry.
pub const PAX_PATCH_ZERO: &str = "VOLMIG.patch.zero";

/// What a delta entry does to the path it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaMark {
    /// The path (and a directory's subtree) is gone from the source.
    Delete,
    /// The file at the path changed in these chunks.
    Patch(Box<Patch>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// The file's logical size after the patch (it may have grown or
    /// shrunk: chunks past the end are cut).
    pub size: u64,
    /// Chunk indexes whose bytes follow in the entry's data, as inclusive
    /// ranges in ascending order.
    pub data: Vec<(u64, u64)>,
    /// Chunk indexes that are zeros only (no data carried).
    pub zero: Vec<(u64, u64)>,
}

impl Patch {
    /// Bytes of data the entry carries: each data chunk is `CHUNK` long
    /// but the file's last, which ends at `size`.
    ///
    /// Computed by ranges, not by chunks: a hostile record can name
    /// trillions of them.
    pub fn data_len(&self) -> u64 {
        let last = self.size.div_ceil(CHUNK).saturating_sub(1);
        self.data
            .iter()
            .map(|&(a, b)| {
                let whole = (b - a + 1).saturating_mul(CHUNK);
                if b == last {
                    whole - CHUNK + chunk_len(last, self.size)
                } else {
                    whole
                }
            })
            .fold(0u64, u64::saturating_add)
    }

    /// The chunk indexes of `data`, in order.
    pub fn data_chunks(&self) -> impl Iterator<Item = u64> + '_ {
        self.data.iter().flat_map(|&(a, b)| a..=b)
    }

    pub fn zero_chunks(&self) -> impl Iterator<Item = u64> + '_ {
        self.zero.iter().flat_map(|&(a, b)| a..=b)
    }
}

/// Length of chunk `i` of a file of `size` bytes.
pub fn chunk_len(i: u64, size: u64) -> u64 {
    size.saturating_sub(i.saturating_mul(CHUNK)).min(CHUNK)
}

/// `0-3,7` from ascending indexes.
pub fn encode_ranges(ranges: &[(u64, u64)]) -> String {
    let mut s = String::new();
    for (n, &(a, b)) in ranges.iter().enumerate() {
        if n > 0 {
            s.push(',');
        }
        // Writing into a String cannot fail.
        let _ = if a == b {
            write!(s, "{a}")
        } else {
            write!(s, "{a}-{b}")
        };
    }
    s
}

/// Ranges from ascending indexes.
pub fn to_ranges(indexes: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for i in indexes {
        match out.last_mut() {
            Some((_, b)) if *b + 1 == i => *b = i,
            _ => out.push((i, i)),
        }
    }
    out
}

/// Parses `0-3,7`: ascending, not overlapping, every index below `limit`.
pub fn parse_ranges(text: &str, limit: u64) -> Option<Vec<(u64, u64)>> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    if text.is_empty() {
        return Some(out);
    }
    for part in text.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let a: u64 = part.parse().ok()?;
                (a, a)
            }
        };
        if a > b || b >= limit || out.last().is_some_and(|&(_, end)| a <= end) {
            return None;
        }
        out.push((a, b));
    }
    Some(out)
}

/// Whether two ascending range lists share an index.
fn overlaps(a: &[(u64, u64)], b: &[(u64, u64)]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].1 < b[j].0 {
            i += 1;
        } else if b[j].1 < a[i].0 {
            j += 1;
        } else {
            return true;
        }
    }
    false
}

impl DeltaMark {
    /// The PAX records that carry the mark.
    pub fn pax(&self) -> Vec<(String, Vec<u8>)> {
        match self {
            DeltaMark::Delete => vec![(PAX_DELETE.into(), b"1".to_vec())],
            DeltaMark::Patch(p) => vec![
                (PAX_PATCH_SIZE.into(), p.size.to_string().into_bytes()),
                (PAX_PATCH_DATA.into(), encode_ranges(&p.data).into_bytes()),
                (PAX_PATCH_ZERO.into(), encode_ranges(&p.zero).into_bytes()),
            ],
        }
    }

    /// Appended to the entry's description: empty for a full entry, so
    /// full bundles describe their entries as they always did.
    pub fn describe(mark: Option<&DeltaMark>) -> String {
        match mark {
            None => String::new(),
            Some(DeltaMark::Delete) => "delete\0".into(),
            Some(DeltaMark::Patch(p)) => format!(
                "patch {} {} {}\0",
                p.size,
                encode_ranges(&p.data),
                encode_ranges(&p.zero)
            ),
        }
    }

    /// The mark from an entry's PAX records (`None` when it has none);
    /// `entry_size` is the entry's data length, which a patch's data
    /// chunks must add up to.
    pub fn from_pax(
        delete: Option<&[u8]>,
        patch: [Option<&[u8]>; 3],
        entry_size: u64,
    ) -> Result<Option<DeltaMark>, &'static str> {
        let text = |v: &[u8]| std::str::from_utf8(v).map(str::to_string).ok();
        match (delete, patch) {
            (None, [None, None, None]) => Ok(None),
            (Some(b"1"), [None, None, None]) if entry_size == 0 => Ok(Some(DeltaMark::Delete)),
            (Some(_), _) => Err("bad VOLMIG.delete record"),
            (None, [Some(size), Some(data), Some(zero)]) => {
                let size: u64 = text(size)
                    .and_then(|s| s.parse().ok())
                    .ok_or("bad VOLMIG.patch.size")?;
                let chunks = size.div_ceil(CHUNK);
                let data = text(data)
                    .and_then(|t| parse_ranges(&t, chunks))
                    .ok_or("bad VOLMIG.patch.data")?;
                let zero = text(zero)
                    .and_then(|t| parse_ranges(&t, chunks))
                    .ok_or("bad VOLMIG.patch.zero")?;
                let patch = Patch { size, data, zero };
                if overlaps(&patch.data, &patch.zero) {
                    return Err("a patch chunk is both data and zeros");
                }
                if patch.data_len() != entry_size {
                    return Err("a patch's data does not match its chunks");
                }
                Ok(Some(DeltaMark::Patch(Box::new(patch))))
            }
            _ => Err("incomplete VOLMIG.patch records"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip_and_refuse_disorder() {
        let r = to_ranges([0, 1, 2, 3, 7, 9, 10]);
        assert_eq!(r, vec![(0, 3), (7, 7), (9, 10)]);
        assert_eq!(encode_ranges(&r), "0-3,7,9-10");
        assert_eq!(parse_ranges("0-3,7,9-10", 11), Some(r));
        assert_eq!(parse_ranges("", 0), Some(vec![]));
        for bad in ["3-1", "1,1", "2,1", "0-11", "x", "1-", "-1", "1,,2"] {
            assert_eq!(parse_ranges(bad, 11), None, "{bad}");
        }
    }

    #[test]
    fn a_patch_is_checked_against_its_data() {
        let size = 2 * CHUNK + 5;
        let pax = |d: &str, z: &str| {
            DeltaMark::from_pax(
                None,
                [
                    Some(size.to_string().as_bytes()),
                    Some(d.as_bytes()),
                    Some(z.as_bytes()),
                ],
                CHUNK + 5,
            )
        };
        let ok = pax("0,2", "1").unwrap().unwrap();
        let DeltaMark::Patch(p) = &ok else { panic!() };
        assert_eq!(p.data_len(), CHUNK + 5);
        assert!(pax("0,2", "2").is_err(), "chunk both data and zero");
        assert!(pax("0-1", "").is_err(), "data length differs");
        assert!(pax("0,3", "").is_err(), "past the end");
        assert!(DeltaMark::from_pax(Some(b"1"), [None, None, None], 1).is_err());
        // Trillions of chunks are judged by their ranges, at once.
        let huge = u64::MAX.to_string();
        let r = DeltaMark::from_pax(
            None,
            [Some(huge.as_bytes()), Some(b"0-17592186044414"), Some(b"")],
            5,
        );
        assert!(r.is_err());
        assert_eq!(
            DeltaMark::from_pax(Some(b"1"), [None, None, None], 0),
            Ok(Some(DeltaMark::Delete))
        );
    }
}
