//! The manifest on disk: zstd-compressed JSON lines, written and read one
//! record at a time (see `docs/incremental.md`).
//!
//! JSON lines rather than a binary layout: a user can read one with
//! `zstd -dc M | less`, serde_json is already how volmig writes JSON, and
//! zstd takes most of the size back (measured: 100,000 entries, 4.6 MB).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{kind_from_tag, kind_tag, Entry, ManifestHeader, FORMAT, MAX_CHUNKS};
use crate::bundle::{hex, unhex};

/// Longest line a manifest may have (a path, a link and 1,024 chunk
/// digests fit in a tenth of it).
pub const MAX_LINE: usize = 1 << 20;
/// Chunk digests per `ch` line.
pub const CHUNKS_PER_LINE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest `{path}`: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write manifest `{path}`: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("manifest `{path}`, line {line}: {detail}; it is not a manifest volmig wrote (make one with `volmig export --manifest-out` or `volmig inspect --manifest`)")]
    Format {
        path: PathBuf,
        line: u64,
        detail: String,
    },
}

/// One record of a manifest after its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A volume's entries follow.
    Volume(VolumeStart),
    Entry(Entry),
    /// A volume's entries ended: how many, and their tree digest.
    End(VolumeEnd),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeStart {
    pub volume: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeEnd {
    pub end: String,
    pub entries: u64,
    pub tree: String,
}

/// An entry as one JSON line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    px: Option<String>,
    k: String,
    s: u64,
    m: u32,
    u: u32,
    g: u32,
    t: (i64, u32),
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ct: Option<(i64, u32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lx: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<(u32, u32)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkLine {
    ch: Vec<Option<String>>,
}

/// One parsed line, alive only until it is turned into a `Record`.
#[derive(Deserialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
enum AnyLine {
    Entry(EntryLine),
    Chunks(ChunkLine),
    Volume(VolumeStart),
    End(VolumeEnd),
}

/// A line parsed by its first key, as `ManifestWriter` writes them: serde's
/// untagged parse buffers the line into a generic tree and tries each kind
/// in turn, and every round reads its base's 100,000 lines two or three
/// times. A line whose first key says nothing, or that does not parse as
/// the kind it says, goes the untagged way (and fails with its error).
fn parse_line(line: &[u8]) -> serde_json::Result<AnyLine> {
    let direct = if line.starts_with(br#"{"p":"#) || line.starts_with(br#"{"px":"#) {
        serde_json::from_slice(line).map(AnyLine::Entry)
    } else if line.starts_with(br#"{"ch":"#) {
        serde_json::from_slice(line).map(AnyLine::Chunks)
    } else if line.starts_with(br#"{"volume":"#) {
        serde_json::from_slice(line).map(AnyLine::Volume)
    } else if line.starts_with(br#"{"end":"#) {
        serde_json::from_slice(line).map(AnyLine::End)
    } else {
        return serde_json::from_slice(line);
    };
    direct.or_else(|_| serde_json::from_slice(line))
}

/// Text of bytes for JSON: the string when it is UTF-8, else hex in the
/// `..x` field.
fn split_bytes(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (None, Some(hex(bytes))),
    }
}

/// Writes a manifest; `finish` flushes it (and fsyncs it).
pub struct ManifestWriter {
    path: PathBuf,
    out: zstd::stream::write::Encoder<'static, BufWriter<File>>,
    line: Vec<u8>,
}

impl ManifestWriter {
    pub fn create(path: &Path, header: &ManifestHeader) -> Result<ManifestWriter, ManifestError> {
        let failed = |source| ManifestError::Write {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(failed)?;
        ManifestWriter::new(file, path, header)
    }

    /// Writes onto an open file (`path` names it in errors).
    pub fn new(
        file: File,
        path: &Path,
        header: &ManifestHeader,
    ) -> Result<ManifestWriter, ManifestError> {
        let failed = |source| ManifestError::Write {
            path: path.to_path_buf(),
            source,
        };
        // Level 1: a base of 100,000 entries is rewritten by every delta
        // import, and at level 3 compressing it was an eighth of the
        // import's time; for these lines (hex digests, JSON) level 1 is as
        // small (5.4 MB vs 6.1 MB for 20 MB of lines).
        let out = zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 16, file), 1)
            .map_err(failed)?;
        let mut w = ManifestWriter {
            path: path.to_path_buf(),
            out,
            line: Vec::with_capacity(512),
        };
        w.json(header)?;
        Ok(w)
    }

    fn failed(&self, source: io::Error) -> ManifestError {
        ManifestError::Write {
            path: self.path.clone(),
            source,
        }
    }

    fn json<T: Serialize>(&mut self, value: &T) -> Result<(), ManifestError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value).map_err(|e| self.failed(e.into()))?;
        self.line.push(b'\n');
        let line = std::mem::take(&mut self.line);
        let r = self.out.write_all(&line).map_err(|e| self.failed(e));
        self.line = line;
        r
    }

    pub fn volume(&mut self, name: &str) -> Result<(), ManifestError> {
        self.json(&VolumeStart {
            volume: name.to_string(),
        })
    }

    pub fn end(&mut self, name: &str, entries: u64, tree: &str) -> Result<(), ManifestError> {
        self.json(&VolumeEnd {
            end: name.to_string(),
            entries,
            tree: tree.to_string(),
        })
    }

    pub fn entry(&mut self, e: &Entry) -> Result<(), ManifestError> {
        let (p, px) = split_bytes(&e.path);
        let (l, lx) = match &e.link {
            Some(link) => split_bytes(link),
            None => (None, None),
        };
        let line = EntryLine {
            p,
            px,
            k: (kind_tag(e.kind) as char).to_string(),
            s: e.size,
            m: e.mode,
            u: e.uid,
            g: e.gid,
            t: e.mtime,
            ct: e.ctime,
            i: e.ino,
            x: e.xattrs.as_ref().map(|x| hex(x)),
            c: e.content.as_ref().map(|c| hex(c)),
            l,
            lx,
            r: e.rdev,
            n: (!e.chunks.is_empty()).then_some(e.chunks.len() as u64),
        };
        self.json(&line)?;
        for group in e.chunks.chunks(CHUNKS_PER_LINE) {
            let ch = ChunkLine {
                ch: group.iter().map(|c| c.as_ref().map(|d| hex(d))).collect(),
            };
            self.json(&ch)?;
        }
        Ok(())
    }

    /// Ends the stream and makes it durable.
    pub fn finish(self) -> Result<(), ManifestError> {
        let path = self.path.clone();
        let file = self.into_file()?;
        file.sync_all()
            .map_err(|source| ManifestError::Write { path, source })
    }

    /// Ends the stream and hands the file back, not made durable: for a
    /// spool read back by the same process (import's base records).
    pub fn into_file(self) -> Result<File, ManifestError> {
        let path = self.path.clone();
        let failed = |source| ManifestError::Write {
            path: path.clone(),
            source,
        };
        let buffered = self.out.finish().map_err(failed)?;
        buffered.into_inner().map_err(|e| failed(e.into_error()))
    }
}

/// Reads a manifest record by record.
pub struct ManifestReader {
    path: PathBuf,
    input: BufReader<Box<dyn Read + Send>>,
    line_no: u64,
    buf: Vec<u8>,
    header: ManifestHeader,
}

impl ManifestReader {
    /// Opens a manifest and reads its header. Only a regular file is
    /// opened (a fifo would block, a device could be endless).
    pub fn open(path: &Path) -> Result<ManifestReader, ManifestError> {
        let failed = |source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        };
        // A user's own file: a symlink to it is followed, but a fifo or a
        // device is never read (O_NONBLOCK: opening a fifo does not block).
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(failed)?;
        if !file.metadata().map_err(failed)?.is_file() {
            return Err(failed(io::Error::other("not a regular file")));
        }
        ManifestReader::from_reader(Box::new(file), path)
    }

    pub fn from_reader(
        input: Box<dyn Read + Send>,
        path: &Path,
    ) -> Result<ManifestReader, ManifestError> {
        let failed = |source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut decoder = zstd::stream::read::Decoder::new(input).map_err(failed)?;
        decoder
            .window_log_max(crate::bundle::limits::ZSTD_WINDOW_LOG_MAX)
            .map_err(failed)?;
        let mut r = ManifestReader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(1 << 16, Box::new(decoder)),
            line_no: 0,
            buf: Vec::new(),
            header: ManifestHeader {
                format: String::new(),
                chunk_size: 0,
                bundle: String::new(),
                side: String::new(),
                host: String::new(),
                data_root: String::new(),
                record: None,
            },
        };
        let Some(line) = r.line()? else {
            return Err(r.bad("it is empty".into()));
        };
        let header: ManifestHeader = serde_json::from_slice(line)
            .map_err(|e| r.bad(format!("not a manifest header ({e})")))?;
        if header.format != FORMAT {
            return Err(r.bad(format!(
                "format `{}`, this volmig reads `{FORMAT}`",
                header.format
            )));
        }
        if header.chunk_size != super::CHUNK {
            // Chunk indexes and content digests of large files depend on
            // it (an older volmig used 1 MiB): such a round is followed by
            // a full one, not a delta.
            return Err(r.bad(format!(
                "chunk size {}, this volmig uses {} (a manifest of another volmig version: export the next round in full)",
                header.chunk_size,
                super::CHUNK
            )));
        }
        r.header = header;
        Ok(r)
    }

    pub fn header(&self) -> &ManifestHeader {
        &self.header
    }

    fn bad(&self, detail: String) -> ManifestError {
        ManifestError::Format {
            path: self.path.clone(),
            line: self.line_no,
            detail,
        }
    }

    /// The next line without its newline, at most `MAX_LINE` bytes.
    fn line(&mut self) -> Result<Option<&[u8]>, ManifestError> {
        self.buf.clear();
        self.line_no += 1;
        let mut limited = (&mut self.input).take(MAX_LINE as u64 + 1);
        let n = limited
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| ManifestError::Read {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Ok(None);
        }
        if self.buf.last() != Some(&b'\n') {
            let detail = if self.buf.len() > MAX_LINE {
                format!("a line over {MAX_LINE} bytes")
            } else {
                "it ends in the middle of a line (truncated)".into()
            };
            return Err(self.bad(detail));
        }
        self.buf.pop();
        Ok(Some(&self.buf))
    }

    /// The next record; `None` at the end of the manifest.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Record>, ManifestError> {
        let Some(line) = self.line()? else {
            return Ok(None);
        };
        let parsed = parse_line(line).map_err(|e| self.bad(format!("unreadable ({e})")))?;
        match parsed {
            AnyLine::Volume(v) => Ok(Some(Record::Volume(v))),
            AnyLine::End(e) => Ok(Some(Record::End(e))),
            AnyLine::Chunks(c) => Err(self.bad(format!(
                "{} chunk digests with no file before them",
                c.ch.len()
            ))),
            AnyLine::Entry(line) => self.entry(line).map(|e| Some(Record::Entry(e))),
        }
    }

    fn entry(&mut self, line: EntryLine) -> Result<Entry, ManifestError> {
        let bytes = |s: Option<String>, x: Option<String>, what: &str| match (s, x) {
            (Some(s), None) => Ok(Some(s.into_bytes())),
            (None, Some(x)) => unhex(&x)
                .map(Some)
                .ok_or_else(|| format!("its {what} is not hex")),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(format!("two {what}s")),
        };
        let digest = |s: Option<String>, what: &str| match s {
            None => Ok(None),
            Some(s) => match unhex(&s).map(<[u8; 32]>::try_from) {
                Some(Ok(d)) => Ok(Some(d)),
                _ => Err(format!("its {what} is not a SHA-256")),
            },
        };
        let parsed = (|| {
            let path = bytes(line.p, line.px, "path")?.ok_or("an entry without a path")?;
            let kind = kind_from_tag(&line.k).ok_or_else(|| format!("kind `{}`", line.k))?;
            Ok::<Entry, String>(Entry {
                path,
                kind,
                size: line.s,
                mode: line.m,
                uid: line.u,
                gid: line.g,
                mtime: line.t,
                ctime: line.ct,
                ino: line.i,
                xattrs: digest(line.x, "xattrs digest")?,
                content: digest(line.c, "content digest")?,
                link: bytes(line.l, line.lx, "link")?,
                rdev: line.r,
                chunks: Vec::new(),
            })
        })();
        let mut entry = parsed.map_err(|d| self.bad(d))?;
        let n = line.n.unwrap_or(0);
        if n > MAX_CHUNKS || n > entry.size.div_ceil(super::CHUNK) {
            return Err(self.bad(format!("{n} chunks for {} bytes", entry.size)));
        }
        while (entry.chunks.len() as u64) < n {
            let Some(line) = self.line()? else {
                return Err(self.bad("it ends before a file's chunk digests".into()));
            };
            let chunks: ChunkLine = serde_json::from_slice(line)
                .map_err(|e| self.bad(format!("expected chunk digests ({e})")))?;
            if chunks.ch.len() > CHUNKS_PER_LINE
                || entry.chunks.len() as u64 + chunks.ch.len() as u64 > n
            {
                return Err(self.bad("more chunk digests than the file has".into()));
            }
            for c in chunks.ch {
                let d = digest(c, "chunk digest").map_err(|d| self.bad(d))?;
                entry.chunks.push(d);
            }
        }
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::EntryKind;

    fn header() -> ManifestHeader {
        ManifestHeader {
            format: FORMAT.into(),
            chunk_size: super::super::CHUNK,
            bundle: "ab".repeat(32),
            side: "source".into(),
            host: "h".into(),
            data_root: "/var/lib/docker".into(),
            record: None,
        }
    }

    fn entry(path: &[u8]) -> Entry {
        Entry {
            path: path.to_vec(),
            kind: EntryKind::File,
            size: 3 << 20,
            mode: 0o640,
            uid: 999,
            gid: 999,
            mtime: (-2, 750_000_000),
            ctime: Some((5, 6)),
            ino: Some(77),
            xattrs: Some([3; 32]),
            content: Some([4; 32]),
            link: Some(b"\xff\x00odd".to_vec()),
            rdev: None,
            chunks: vec![Some([1; 32]), None, Some([2; 32])],
        }
    }

    #[test]
    fn records_round_trip_with_any_bytes_in_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let mut w = ManifestWriter::create(&path, &header()).unwrap();
        w.volume("data").unwrap();
        let entries = [entry(b""), entry(b"a\xffb"), entry("é/ü".as_bytes())];
        for e in &entries {
            w.entry(e).unwrap();
        }
        w.end("data", 3, "00").unwrap();
        w.finish().unwrap();
        let mut r = ManifestReader::open(&path).unwrap();
        assert_eq!(r.header(), &header());
        assert_eq!(
            r.next().unwrap(),
            Some(Record::Volume(VolumeStart {
                volume: "data".into()
            }))
        );
        for e in &entries {
            assert_eq!(r.next().unwrap(), Some(Record::Entry(e.clone())));
        }
        assert!(matches!(r.next().unwrap(), Some(Record::End(_))));
        assert_eq!(r.next().unwrap(), None);
    }

    #[test]
    fn a_truncated_or_foreign_manifest_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let mut w = ManifestWriter::create(&path, &header()).unwrap();
        w.volume("data").unwrap();
        w.entry(&entry(b"x")).unwrap();
        w.finish().unwrap();
        // Re-compress all but the last chunk line.
        let text = zstd::decode_all(File::open(&path).unwrap()).unwrap();
        let cut = &text[..text.len() - 10];
        std::fs::write(&path, zstd::encode_all(cut, 3).unwrap()).unwrap();
        let mut r = ManifestReader::open(&path).unwrap();
        r.next().unwrap();
        let err = r.next().unwrap_err().to_string();
        assert!(err.contains("line 4") && err.contains("truncated"), "{err}");

        std::fs::write(
            &path,
            zstd::encode_all(&b"{\"format\":\"x\"}\n"[..], 3).unwrap(),
        )
        .unwrap();
        let err = ManifestReader::open(&path).err().unwrap().to_string();
        assert!(err.contains("not a manifest header"), "{err}");
        std::fs::write(&path, b"plain text").unwrap();
        assert!(ManifestReader::open(&path).is_err());
    }

    #[test]
    fn lines_in_another_key_order_still_read() {
        let mut text = serde_json::to_vec(&header()).unwrap();
        text.extend_from_slice(
            b"\n{\"volume\":\"v\"}\n{\"k\":\"f\",\"s\":1,\"m\":420,\"u\":0,\"g\":0,\"t\":[1,2],\"p\":\"x\"}\n{\"tree\":\"00\",\"entries\":1,\"end\":\"v\"}\n{\"p\":1}\n",
        );
        let path = Path::new("m");
        let mut r = ManifestReader::from_reader(
            Box::new(io::Cursor::new(zstd::encode_all(&text[..], 3).unwrap())),
            path,
        )
        .unwrap();
        assert!(matches!(r.next().unwrap(), Some(Record::Volume(_))));
        match r.next().unwrap() {
            Some(Record::Entry(e)) => assert_eq!((e.path, e.size), (b"x".to_vec(), 1)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.next().unwrap(), Some(Record::End(_))));
        let err = r.next().unwrap_err().to_string();
        assert!(
            err.contains("line 5") && err.contains("unreadable"),
            "{err}"
        );
    }

    #[test]
    fn an_endless_line_is_refused_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let mut text = serde_json::to_vec(&header()).unwrap();
        text.push(b'\n');
        text.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE));
        std::fs::write(&path, zstd::encode_all(&text[..], 3).unwrap()).unwrap();
        let mut r = ManifestReader::open(&path).unwrap();
        let err = r.next().unwrap_err().to_string();
        assert!(err.contains("a line over"), "{err}");
    }
}
