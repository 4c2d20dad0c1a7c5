//! `volmig inspect BUNDLE --manifest FILE` (issue 9): the manifest of a
//! full bundle recovered from the bundle alone equals the one its export
//! wrote (`--manifest-out`) but for the source's ctime and inode, which a
//! bundle does not carry; it appears only once the bundle is verified, and
//! never for a bundle no delta could name.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::bundle_support::{
    export_to, parse_entries, position, reseal, stderr, stdout, write_at, write_entries, APP_ID,
};
use crate::common::{json_run, volume_mount, FakeDataRoot};
use sha2::{Digest, Sha256};
use volmig::bundle::{HEADER_PATH, TRAILER_PATH};
use volmig::manifest::io::VolumeEnd;
use volmig::manifest::{Entry, ManifestHeader, ManifestReader, Record, CHUNK};

const MIB: u64 = 1 << 20;

/// A data-root whose container `app` mounts volume `vol`: nested
/// directories, a 3 MiB file, a sparse file with a 5 MiB hole, one that
/// ends in a hole, a symlink, a hardlink pair, xattrs (on `_data` too).
fn source() -> FakeDataRoot {
    let mut src = FakeDataRoot::new();
    let root = src.path();
    src.volume("vol", &[("role", "test")])
        .container(APP_ID, "app", &[volume_mount("vol", "/data", &root)])
        .write_db();
    let d = root.join("volumes/vol/_data");
    let t = |n: u32| (1_650_000_000 + n as i64, 100_000_000 + n);
    fs::create_dir_all(d.join("a/b/c")).unwrap();
    write_at(&d.join("a/b/c/leaf.txt"), &[b'q'; 2000], t(1));
    write_at(&d.join("a/top.txt"), b"top\n", t(2));
    write_at(&d.join("empty"), b"", t(3));
    let big: Vec<u8> = (0..3 * MIB as u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write_at(&d.join("big"), &big, t(4));

    // 4 KiB of data, a 5 MiB hole, 8 KiB of data.
    let mut f = fs::File::create(d.join("sparse")).unwrap();
    f.write_all(&[0x11; 4096]).unwrap();
    f.seek(SeekFrom::Start(4096 + 5 * MIB)).unwrap();
    f.write_all(&[0x22; 8192]).unwrap();
    drop(f);
    volmig::fileattrs::set_mtime(&d.join("sparse"), t(5).0, t(5).1).unwrap();
    // 1 MiB and a bit of data, then a hole to 2.5 MiB.
    let mut f = fs::File::create(d.join("tail-hole")).unwrap();
    f.write_all(&vec![0x33; (MIB + 100) as usize]).unwrap();
    f.set_len(5 * MIB / 2).unwrap();
    drop(f);
    volmig::fileattrs::set_mtime(&d.join("tail-hole"), t(6).0, t(6).1).unwrap();

    std::os::unix::fs::symlink("a/b/c/leaf.txt", d.join("link")).unwrap();
    write_at(&d.join("a/h2"), b"linked\n", t(7));
    fs::hard_link(d.join("a/h2"), d.join("h1")).unwrap();

    volmig::fileattrs::set_xattr(&d.join("a/top.txt"), b"user.one", b"1\0\xff").unwrap();
    volmig::fileattrs::set_xattr(&d.join("a/top.txt"), b"user.two", b"").unwrap();
    volmig::fileattrs::set_xattr(&d.join("a/b"), b"user.on-dir", b"d").unwrap();
    volmig::fileattrs::set_xattr(&d, b"user.on-data", b"x").unwrap();
    for (i, dir) in [d.join("a/b/c"), d.join("a/b"), d.join("a"), d.clone()]
        .iter()
        .enumerate()
    {
        volmig::fileattrs::set_mtime(dir, 1_700_000_000 + i as i64, 7).unwrap();
    }
    src
}

/// A manifest's header and records.
fn read_manifest(path: &Path) -> (ManifestHeader, Vec<Record>) {
    let mut r = ManifestReader::open(path).unwrap();
    let header = r.header().clone();
    let mut records = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        records.push(rec);
    }
    (header, records)
}

fn entries(records: &[Record]) -> Vec<&Entry> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Entry(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn entry<'a>(records: &'a [Record], path: &str) -> &'a Entry {
    entries(records)
        .into_iter()
        .find(|e| e.path == path.as_bytes())
        .unwrap_or_else(|| panic!("no entry `{path}`"))
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A file's content digest by the chunk rules, from its bytes on disk.
fn chunk_digest(data: &[u8]) -> ([u8; 32], Vec<[u8; 32]>) {
    if data.len() as u64 <= CHUNK {
        return (sha(data), Vec::new());
    }
    let chunks: Vec<[u8; 32]> = data.chunks(CHUNK as usize).map(sha).collect();
    (sha(&chunks.concat()), chunks)
}

fn partial(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// `inspect BUNDLE --manifest M` and `inspect --check BUNDLE`: their exit
/// codes and outputs.
fn inspect_both(bundle: &Path, m: &Path) -> (i32, String, i32) {
    let out = crate::common::volmig()
        .arg("inspect")
        .arg(bundle)
        .arg("--manifest")
        .arg(m)
        .output()
        .unwrap();
    let check = crate::common::volmig()
        .args(["inspect", "--check"])
        .arg(bundle)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        format!("{}{}", stdout(&out), stderr(&out)),
        check.status.code().unwrap(),
    )
}

#[test]
fn a_manifest_from_the_bundle_equals_the_exports_but_for_ctime_and_inode() {
    let src = source();
    let work = tempfile::tempdir().unwrap();
    let (bundle, m1, m2) = (
        work.path().join("b.tar"),
        work.path().join("m1"),
        work.path().join("m2"),
    );
    let m1_arg = m1.to_str().unwrap();
    export_to(&src, &["app"], &["--manifest-out", m1_arg], &bundle);

    let out = crate::common::volmig()
        .arg("inspect")
        .arg(&bundle)
        .arg("--manifest")
        .arg(&m2)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "every digest checked: OK",
        "manifest of round ",
        "1 volume, 13 entries",
        "re-hashes every file",
        "  volume vol: 13 entries, tree ",
        "tree digests checked against the trailer: OK",
    ] {
        assert!(text.contains(want), "`{want}` not in:\n{text}");
    }
    assert!(!partial(&m2).exists());

    let (h1, r1) = read_manifest(&m1);
    let (h2, r2) = read_manifest(&m2);
    assert_eq!(h2.bundle, h1.bundle, "the round id deltas name");
    assert_eq!(
        (&h2.format, h2.chunk_size, &h2.host),
        (&h1.format, h1.chunk_size, &h1.host)
    );
    assert_eq!((h1.side.as_str(), h2.side.as_str()), ("source", "bundle"));
    assert_eq!(h2.data_root, src.path().display().to_string());

    // Every record equal (volume start, entries in order, counts and tree
    // digests at the end) once the source's stat is taken out of M1.
    assert!(entries(&r1)
        .iter()
        .all(|e| e.ctime.is_some() && e.ino.is_some()));
    assert!(entries(&r2)
        .iter()
        .all(|e| e.ctime.is_none() && e.ino.is_none()));
    let without_stat: Vec<Record> = r1
        .iter()
        .cloned()
        .map(|r| match r {
            Record::Entry(mut e) => {
                e.ctime = None;
                e.ino = None;
                Record::Entry(e)
            }
            other => other,
        })
        .collect();
    assert_eq!(r2, without_stat);
    assert_eq!(entries(&r2).len(), 13);

    // And by the rules, from the files themselves.
    let d = src.path().join("volumes/vol/_data");
    for name in ["big", "sparse", "tail-hole", "a/b/c/leaf.txt", "empty"] {
        let data = fs::read(d.join(name)).unwrap();
        let (content, chunks) = chunk_digest(&data);
        let e = entry(&r2, name);
        assert_eq!(e.size, data.len() as u64, "{name}");
        assert_eq!(e.content, Some(content), "{name}");
        let zero = *volmig::manifest::chunks::zero_chunk();
        let listed: Vec<[u8; 32]> = e.chunks.iter().map(|c| c.unwrap_or(zero)).collect();
        assert_eq!(listed, chunks, "{name}");
    }
    assert_eq!(entry(&r2, "big").chunks.len() as u64, 3 * MIB / CHUNK);
    // The 5 MiB hole, when the filesystem kept it: whole chunks of it are
    // recorded as zeros without having been read.
    let sparse = fs::metadata(d.join("sparse")).unwrap();
    if sparse.blocks() * 512 < sparse.size() {
        let c = &entry(&r2, "sparse").chunks;
        let last = c.len() - 1;
        assert_eq!(c.len() as u64, sparse.size().div_ceil(CHUNK));
        assert!(c[0].is_some() && c[last].is_some(), "{c:?}");
        assert!(c[1..last].iter().all(Option::is_none), "{c:?}");
    }
    let h1_entry = entry(&r2, "h1");
    assert_eq!(
        (h1_entry.kind, h1_entry.link.as_deref()),
        (volmig::bundle::EntryKind::Hardlink, Some(&b"a/h2"[..]))
    );
    assert_eq!(
        entry(&r2, "link").link.as_deref(),
        Some(&b"a/b/c/leaf.txt"[..])
    );
    assert!(entry(&r2, "a/top.txt").xattrs.is_some());
    assert!(entry(&r2, "").xattrs.is_some());
    assert!(entry(&r2, "a/h2").xattrs.is_none());

    // --json: one document, naming the manifest, with each volume's count
    // and tree digest (the trailer's); an existing FILE is replaced.
    let (code, doc) = json_run(
        crate::common::volmig()
            .arg("inspect")
            .arg(&bundle)
            .arg("--manifest")
            .arg(&m2),
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["checked"], true);
    assert_eq!(doc["manifest"], m2.to_str().unwrap());
    assert_eq!(doc["round"], h1.bundle.as_str());
    assert_eq!(doc["trees_checked"], true);
    let Some(Record::End(VolumeEnd {
        tree,
        entries: count,
        ..
    })) = r1.last()
    else {
        panic!("M1 does not end with its volume's end");
    };
    assert_eq!(doc["volumes"][0]["name"], "vol");
    assert_eq!(doc["volumes"][0]["entries"], *count);
    assert_eq!(doc["volumes"][0]["tree"], tree.as_str());
    assert_eq!(doc["trailer"]["trees"]["vol"], tree.as_str());
    assert_eq!(read_manifest(&m2).1, r2);
}

#[test]
fn a_bundle_without_a_round_is_refused_and_leaves_no_file() {
    let src = source();
    let work = tempfile::tempdir().unwrap();
    let (bundle, m) = (work.path().join("b.tar"), work.path().join("m"));
    export_to(&src, &["app"], &[], &bundle);
    let out = crate::common::volmig()
        .arg("inspect")
        .arg(&bundle)
        .arg("--manifest")
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no round id") && err.contains("export it again with --manifest-out"),
        "{err}"
    );
    assert!(!m.exists() && !partial(&m).exists());

    let (code, doc) = json_run(
        crate::common::volmig()
            .arg("inspect")
            .arg(&bundle)
            .arg("--manifest")
            .arg(&m),
    );
    assert_eq!(code, 2, "{doc:#}");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], 2);
    assert!(doc["error"].as_str().unwrap().contains("--manifest-out"));
    assert!(!m.exists() && !partial(&m).exists());
}

#[test]
fn a_broken_bundle_leaves_no_manifest_and_exits_as_check_does() {
    let src = source();
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("b.tar");
    let m1 = work.path().join("m1");
    export_to(
        &src,
        &["app"],
        &["--manifest-out", m1.to_str().unwrap()],
        &bundle,
    );
    let bytes = fs::read(&bundle).unwrap();
    let m = work.path().join("m");

    // One flipped byte in the data of `a/b/c/leaf.txt` (2000 x 'q').
    let mut flipped = bytes.clone();
    let at = flipped
        .windows(2000)
        .position(|w| w.iter().all(|&b| b == b'q'))
        .unwrap();
    flipped[at + 1000] ^= 0x01;
    let bad = work.path().join("flipped.tar");
    fs::write(&bad, &flipped).unwrap();
    let (code, text, check) = inspect_both(&bad, &m);
    assert_eq!((code, check), (1, 1), "{text}");
    assert!(
        text.contains("check FAILED") && text.contains("volumes/vol/_data/a/b/c/leaf.txt"),
        "{text}"
    );
    assert!(!m.exists() && !partial(&m).exists());

    // Cut in the middle of the 3 MiB file.
    let cut = work.path().join("cut.tar");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (code, text, check) = inspect_both(&cut, &m);
    assert_eq!((code, check), (1, 1), "{text}");
    assert!(text.contains("truncated"), "{text}");
    assert!(!m.exists() && !partial(&m).exists());

    // A trailer whose tree digest was altered: not covered by the other
    // digests (`--check` passes), but not the tree the entries make.
    let mut entries = parse_entries(&bytes);
    let t = position(&entries, TRAILER_PATH.as_bytes());
    let mut trailer: serde_json::Value = serde_json::from_slice(&entries[t].data).unwrap();
    trailer["trees"]["vol"] = "ab".repeat(32).into();
    entries[t].data = serde_json::to_vec_pretty(&trailer).unwrap();
    let altered = work.path().join("trees.tar");
    fs::write(&altered, write_entries(&entries)).unwrap();
    let (code, text, check) = inspect_both(&altered, &m);
    assert_eq!((code, check), (1, 0), "{text}");
    assert!(
        text.contains("check FAILED: volume `vol`") && text.contains(&"ab".repeat(32)),
        "{text}"
    );
    assert!(!m.exists() && !partial(&m).exists());

    // An existing FILE is left as it was.
    fs::copy(&m1, &m).unwrap();
    let (code, _, _) = inspect_both(&bad, &m);
    assert_eq!(code, 1);
    assert_eq!(fs::read(&m).unwrap(), fs::read(&m1).unwrap());
    assert!(!partial(&m).exists());
}

#[test]
fn a_delta_is_refused_and_the_bundle_read_is_never_overwritten() {
    let src = source();
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("b.tar");
    let m1 = work.path().join("m1");
    export_to(
        &src,
        &["app"],
        &["--manifest-out", m1.to_str().unwrap()],
        &bundle,
    );
    let bytes = fs::read(&bundle).unwrap();

    // The same bundle named a delta (header and its digest in the trailer).
    let mut entries = parse_entries(&bytes);
    let mut header: serde_json::Value = serde_json::from_slice(&entries[0].data).unwrap();
    assert_eq!(entries[0].path, HEADER_PATH.as_bytes());
    header["round"]["base"] = "cd".repeat(16).into();
    entries[0].data = serde_json::to_vec_pretty(&header).unwrap();
    let t = position(&entries, TRAILER_PATH.as_bytes());
    let mut trailer: serde_json::Value = serde_json::from_slice(&entries[t].data).unwrap();
    trailer["header_sha256"] = volmig::bundle::hex(&sha(&entries[0].data)).into();
    entries[t].data = serde_json::to_vec_pretty(&trailer).unwrap();
    let delta = work.path().join("delta.tar");
    fs::write(&delta, write_entries(&entries)).unwrap();
    let m = work.path().join("m");
    let (code, text, check) = inspect_both(&delta, &m);
    assert_eq!((code, check), (2, 0), "{text}");
    assert!(text.contains("is a delta"), "{text}");
    assert!(!m.exists() && !partial(&m).exists());

    // A full bundle with a delta's deletion mark in it: no manifest.
    let mut entries = parse_entries(&bytes);
    let at = position(&entries, b"volumes/vol/_data/empty");
    entries[at]
        .pax
        .push(("VOLMIG.delete".into(), b"1".to_vec()));
    reseal(&mut entries);
    let marked = work.path().join("marked.tar");
    fs::write(&marked, write_entries(&entries)).unwrap();
    let (code, text, _) = inspect_both(&marked, &m);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("volumes/vol/_data/empty") && text.contains("no delta"),
        "{text}"
    );
    assert!(!m.exists() && !partial(&m).exists());

    // FILE, or FILE.partial, is the bundle itself: refused, untouched.
    let (code, text, _) = inspect_both(&bundle, &bundle);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("is the bundle being read"), "{text}");
    let named = work.path().join("x.partial");
    fs::copy(&bundle, &named).unwrap();
    let x = work.path().join("x");
    let (code, text, _) = inspect_both(&named, &x);
    assert_eq!(code, 2, "{text}");
    assert!(!x.exists());
    assert_eq!(fs::read(&bundle).unwrap(), bytes);
    assert_eq!(fs::read(&named).unwrap(), bytes);
}

/// The `_data` entries a bundle carries, as `rel` with ` (delete)` or
/// ` (patch)` for marked ones.
fn carried(bundle: &Path) -> Vec<String> {
    parse_entries(&fs::read(bundle).unwrap())
        .iter()
        .filter_map(|e| {
            let rel = e.path.strip_prefix(b"volumes/vol/_data")?;
            let rel = String::from_utf8_lossy(rel.strip_prefix(b"/").unwrap_or(rel)).into_owned();
            let mark = if e.pax.iter().any(|(k, _)| k == "VOLMIG.delete") {
                " (delete)"
            } else if e.pax.iter().any(|(k, _)| k == "VOLMIG.patch.size") {
                " (patch)"
            } else {
                ""
            };
            Some(format!("{rel}{mark}"))
        })
        .collect()
}

#[test]
fn a_recovered_manifest_is_a_base_for_export_since() {
    let src = source();
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name);
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    export_to(
        &src,
        &["app"],
        &["--manifest-out", &arg(&path("m1"))],
        &path("b0"),
    );
    let out = crate::common::volmig()
        .arg("inspect")
        .arg(path("b0"))
        .arg("--manifest")
        .arg(path("m2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A chunk of the 3 MiB file, a small file, a deletion.
    let d = src.path().join("volumes/vol/_data");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(d.join("big"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"changed", (2 << 20) + 17).unwrap();
    drop(f);
    fs::write(d.join("a/top.txt"), b"TOP\n").unwrap();
    fs::remove_file(d.join("empty")).unwrap();

    // Without the source's stat every file is re-hashed, and the delta
    // is the one the export's own manifest gives.
    let since = |m: &str, out: &str| {
        let extra = ["--since".to_string(), arg(&path(m))];
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        export_to(&src, &["app"], &extra, &path(out));
        carried(&path(out))
    };
    let from_m1 = since("m1", "d1");
    let from_m2 = since("m2", "d2");
    assert_eq!(from_m2, from_m1);
    assert!(from_m2.contains(&"big (patch)".to_string()), "{from_m2:?}");
    assert!(from_m2.contains(&"a/top.txt".to_string()), "{from_m2:?}");
    assert!(
        from_m2.contains(&"empty (delete)".to_string()),
        "{from_m2:?}"
    );
    assert!(
        !from_m2.iter().any(|e| e == "sparse" || e == "tail-hole"),
        "{from_m2:?}"
    );

    // That delta is no base of a manifest (but a sound bundle).
    let (code, text, check) = inspect_both(&path("d2"), &path("m3"));
    assert_eq!((code, check), (2, 0), "{text}");
    assert!(text.contains("is a delta"), "{text}");
    assert!(!path("m3").exists() && !partial(&path("m3")).exists());
}
