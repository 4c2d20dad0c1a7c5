//! What was read, counted and digested as the entries pass, and its
//! comparison with SHA256SUMS and the trailer at the end.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use super::limits::MAX_SUMS_LINE;
use super::reader::{io_error, show, ReadError};
use super::{hex, RunningDigest, Trailer, VolumeSummary, FORMAT};

/// Counts and digests of what was read, to compare with the trailer.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) entries: u64,
    pub(super) files: u64,
    pub(super) bytes: u64,
    pub(super) entries_digest: RunningDigest,
    pub(super) sums_digest: Sha256,
    pub(super) volumes: BTreeMap<String, (RunningDigest, VolumeSummary)>,
}

/// Compares the SHA256SUMS entry with the lines computed while reading,
/// naming the first file whose digest differs.
pub(super) fn check_sums<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    mut spooled: File,
    tally: &mut Tally,
) -> Result<(), ReadError> {
    spooled.seek(SeekFrom::Start(0)).map_err(ReadError::Io)?;
    let mut ours = BufReader::new(spooled);
    let mut theirs = BufReader::new(entry);
    let mut a = Vec::new();
    let mut b = Vec::new();
    loop {
        a.clear();
        b.clear();
        let na = ours.read_until(b'\n', &mut a).map_err(ReadError::Io)?;
        // # Security
        // A line without end would be read whole into memory.
        let nb = (&mut theirs)
            .take(MAX_SUMS_LINE)
            .read_until(b'\n', &mut b)
            .map_err(io_error)?;
        tally.sums_digest.update(&b);
        if na == 0 && nb == 0 {
            return Ok(());
        }
        if a != b {
            let name = |l: &[u8]| {
                l.get(66..)
                    .map(|p| show(p).trim_end().to_string())
                    .unwrap_or_default()
            };
            let what = match (na, nb) {
                (0, _) => format!(
                    "SHA256SUMS lists `{}`, which the bundle does not hold",
                    name(&b)
                ),
                (_, 0) => format!("`{}` is not in SHA256SUMS", name(&a)),
                _ if name(&a) == name(&b) => format!(
                    "content of `{}` does not match its digest (SHA-256 {} in the bundle, {} read)",
                    name(&a),
                    show(b.get(..64).unwrap_or_default()),
                    show(a.get(..64).unwrap_or_default())
                ),
                _ => format!(
                    "SHA256SUMS lists `{}` where the bundle holds `{}`",
                    name(&b),
                    name(&a)
                ),
            };
            return Err(ReadError::Corrupt(what));
        }
    }
}

pub(super) fn check_trailer(
    trailer: &Trailer,
    tally: Tally,
    header_sha256: &str,
) -> Result<(), ReadError> {
    let mismatch = |what: &str, want: String, got: String| {
        ReadError::Corrupt(format!("{what} is {got} but the trailer says {want}"))
    };
    if trailer.format != FORMAT {
        return Err(ReadError::Format(trailer.format.clone()));
    }
    if trailer.header_sha256 != header_sha256 {
        return Err(ReadError::Corrupt(
            "the header was altered (its digest does not match the trailer)".into(),
        ));
    }
    if trailer.entries != tally.entries {
        return Err(mismatch(
            "the entry count",
            trailer.entries.to_string(),
            tally.entries.to_string(),
        ));
    }
    if trailer.files != tally.files || trailer.bytes != tally.bytes {
        return Err(mismatch(
            "the file count and bytes",
            format!("{} files, {} bytes", trailer.files, trailer.bytes),
            format!("{} files, {} bytes", tally.files, tally.bytes),
        ));
    }
    let sums = hex(&tally.sums_digest.finalize());
    if trailer.sums_sha256 != sums {
        return Err(ReadError::Corrupt(
            "SHA256SUMS does not match the trailer".into(),
        ));
    }
    if trailer.entries_sha256 != tally.entries_digest.hex() {
        return Err(ReadError::Corrupt(
            "entry metadata (modes, owners, times, links or xattrs) does not match the trailer"
                .into(),
        ));
    }
    let got: BTreeMap<String, VolumeSummary> = tally
        .volumes
        .into_iter()
        .map(|(name, (d, mut s))| {
            s.digest = d.hex();
            (name, s)
        })
        .collect();
    if got != trailer.volumes {
        return Err(ReadError::Corrupt(
            "per-volume summaries do not match the trailer".into(),
        ));
    }
    Ok(())
}
