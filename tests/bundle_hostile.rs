//! Issue 3, "nothing lost, nothing escapes": hostile and damaged bundles.
//!
//! Each case starts from a valid bundle (exported from a small source) and
//! edits its tar entries so that the header and everything before the
//! hostile entry stay valid; hostile cases are then resealed (SHA256SUMS
//! and trailer recomputed, as anyone can), so only the check under test
//! can stop them. The import must refuse with exit 2 naming the entry, and
//! leave the target data-root exactly as it was (no staging directory, no
//! new volume).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::bundle_support::{
    after_data_of, assert_unchanged, export_to, parse_entries, position, q, reseal, sh,
    small_source, snapshot, stderr, write_entries, Node, RawEntry, APP_ID, DB_ID,
};
use crate::common::FakeDataRoot;

/// A valid bundle of `app` and `db` (volumes appdata, pgdata, shared).
fn valid_bundle(work: &Path) -> Vec<u8> {
    let src = small_source();
    let bundle = work.join("valid.tar");
    export_to(&src, &["app", "db"], &[], &bundle);
    fs::read(bundle).unwrap()
}

/// A target that already holds a volume and a metadata.db, so that
/// "unchanged" means something.
fn target() -> FakeDataRoot {
    let mut t = FakeDataRoot::new();
    t.volume("keep", &[("k", "v")]).write_db();
    fs::write(t.path().join("volumes/keep/_data/file"), b"keep me\n").unwrap();
    t
}

/// A target and what it held before any import was tried. One target
/// serves every case of a test: each refusal must leave it as it was.
struct Target {
    root: FakeDataRoot,
    before: BTreeMap<Vec<u8>, Node>,
    work: tempfile::TempDir,
}

impl Target {
    fn new() -> Target {
        let root = target();
        let before = snapshot(&root.path());
        Target {
            root,
            before,
            work: tempfile::tempdir().unwrap(),
        }
    }

    /// Imports `bytes` and asserts it is refused with exit 2, with every
    /// fragment in the error, and nothing changed.
    fn assert_refused(&self, bytes: &[u8], fragments: &[&str]) {
        let bundle = self.work.path().join("hostile.tar");
        fs::write(&bundle, bytes).unwrap();
        let out = self
            .root
            .volmig()
            .arg("import")
            .arg(&bundle)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "stderr: {err}");
        for f in fragments {
            assert!(err.contains(f), "`{f}` not in: {err}");
        }
        assert!(err.starts_with("error: "), "{err}");
        assert_unchanged(&self.root.path(), &self.before);
    }

    /// The same through stdin.
    fn assert_refused_from_stdin(&self, bytes: &[u8], fragments: &[&str]) {
        let bundle = self.work.path().join("hostile-stdin.tar");
        fs::write(&bundle, bytes).unwrap();
        let out = sh(&format!(
            "{} --data-root {} import - < {}",
            q(&crate::bundle_support::bin()),
            q(&self.root.path()),
            q(&bundle)
        ));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        for f in fragments {
            assert!(err.contains(f), "`{f}` not in: {err}");
        }
        assert_unchanged(&self.root.path(), &self.before);
    }
}

/// The valid bundle's entries with `edit` applied, resealed (SHA256SUMS
/// and trailer recomputed, as an attacker would) and written back: only
/// the streaming checks can stop it.
fn edited(valid: &[u8], edit: impl FnOnce(&mut Vec<RawEntry>)) -> Vec<u8> {
    let mut entries = parse_entries(valid);
    edit(&mut entries);
    reseal(&mut entries);
    write_entries(&entries)
}

/// The same without resealing: what a damaged bundle looks like.
fn tampered(valid: &[u8], edit: impl FnOnce(&mut Vec<RawEntry>)) -> Vec<u8> {
    let mut entries = parse_entries(valid);
    edit(&mut entries);
    write_entries(&entries)
}

#[test]
fn rewritten_valid_bundle_still_imports() {
    // The surgery itself changes nothing: otherwise the cases below would
    // be refused for the wrong reason. The source has what the rewriting
    // must keep: a sparse file, xattrs, a large uid, a pre-1970 time, a
    // long path.
    let work = tempfile::tempdir().unwrap();
    let src = small_source();
    let d = src.path().join("volumes/appdata/_data");
    let f = fs::File::create(d.join("sparse")).unwrap();
    f.set_len(64 << 10).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"end", (64 << 10) - 3).unwrap();
    f.set_len(128 << 10).unwrap();
    drop(f);
    volmig::fileattrs::set_xattr(&d.join("a.txt"), b"user.k", b"v\0w").unwrap();
    std::os::unix::fs::lchown(d.join("b.txt"), Some(4_000_000_000), None).unwrap();
    crate::bundle_support::write_at(&d.join("old"), b"o", (-5, 5));
    let long = d.join("l".repeat(120));
    fs::create_dir(&long).unwrap();
    crate::bundle_support::write_at(&long.join("f".repeat(120)), b"f", (1, 1));
    let bundle = work.path().join("valid.tar");
    export_to(&src, &["app", "db"], &[], &bundle);
    let valid = fs::read(&bundle).unwrap();
    let again = tampered(&valid, |_| {});
    // Resealing an untouched bundle gives back its own SHA256SUMS and
    // trailer: the resealed hostile bundles below are as valid as this.
    let original = parse_entries(&valid);
    let mut resealed = original.clone();
    reseal(&mut resealed);
    for path in [
        &b"volmig-bundle/SHA256SUMS"[..],
        b"volmig-bundle/trailer.json",
    ] {
        let at = position(&original, path);
        assert_eq!(
            String::from_utf8_lossy(&resealed[at].data),
            String::from_utf8_lossy(&original[at].data)
        );
    }
    let bundle = work.path().join("again.tar");
    fs::write(&bundle, &again).unwrap();
    let t = target();
    let out = t.volmig().arg("import").arg(&bundle).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(t.path().join("volumes/appdata/_data/sub/c.txt").is_file());
}

#[test]
fn paths_with_dot_dot_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let t = Target::new();
    let long = format!(
        "volumes/appdata/_data/{}/../../../../../../tmp/x",
        "d".repeat(120)
    );
    for path in [
        "volumes/appdata/_data/../../../../../../tmp/volmig-escape",
        "volumes/appdata/_data/zz/../../../x",
        "volumes/../../etc/cron.d/x",
        "volumes/appdata/_data/./x",
        long.as_str(),
    ] {
        let bytes = edited(&valid, |e| {
            let at = after_data_of(e, "appdata");
            e.insert(at, RawEntry::file(path.as_bytes(), b"pwned\n"));
        });
        t.assert_refused(
            &bytes,
            &[
                &format!("refusing bundle entry `{path}`"),
                "`..` or `.` component",
            ],
        );
        if path == long {
            t.assert_refused_from_stdin(&bytes, &[&format!("refusing bundle entry `{path}`")]);
        }
    }
    assert!(!Path::new("/tmp/volmig-escape").exists());
}

#[test]
fn absolute_paths_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let t = Target::new();
    let outside = work.path().join("outside-abs");
    let path = outside.display().to_string();
    let bytes = edited(&valid, |e| {
        let at = after_data_of(e, "appdata");
        e.insert(at, RawEntry::file(path.as_bytes(), b"pwned\n"));
    });
    t.assert_refused(
        &bytes,
        &[&format!("refusing bundle entry `{path}`: absolute path")],
    );
    assert!(!outside.exists());
}

#[test]
fn nothing_is_written_through_a_symlink_of_the_bundle() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let t = Target::new();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().display().to_string();
    // A file, a directory and a hardlink below the symlink.
    for (below, kind) in [("evil", 'f'), ("evil-dir", 'd'), ("evil-link", 'h')] {
        let bytes = edited(&valid, |e| {
            let at = after_data_of(e, "appdata");
            let below = format!("volumes/appdata/_data/zz-l/{below}");
            let entry = match kind {
                'f' => RawEntry::file(below.as_bytes(), b"pwned\n"),
                'd' => RawEntry::dir(below.as_bytes()),
                _ => RawEntry::hardlink(below.as_bytes(), b"volumes/appdata/_data/a.txt"),
            };
            e.insert(at, entry);
            e.insert(
                at,
                RawEntry::symlink(b"volumes/appdata/_data/zz-l", target.as_bytes()),
            );
        });
        t.assert_refused(&bytes,
            &[&format!(
                "refusing bundle entry `volumes/appdata/_data/zz-l/{below}`: lies below `volumes/appdata/_data/zz-l`, which is not a directory"
            )],
        );
    }
    // A symlink where `_data` or the volume directory must be.
    let bytes = edited(&valid, |e| {
        let at = position(e, b"volumes/appdata/_data");
        e[at] = RawEntry::symlink(b"volumes/appdata/_data", target.as_bytes());
    });
    t.assert_refused(
        &bytes,
        &["refusing bundle entry `volumes/appdata/_data`: a symlink is not allowed there"],
    );
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn hardlinks_outside_their_volume_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let t = Target::new();
    let not_earlier = "which is not an earlier file of the same volume";
    for (volume, link) in [
        ("appdata", "/etc/passwd"),
        ("appdata", "../../../../etc/passwd"),
        ("appdata", "volumes/appdata/_data/../../pgdata/_data/PG_VERSION"),
        // Another volume, earlier in the bundle.
        ("shared", "volumes/appdata/_data/a.txt"),
        // The volume's own opts.json or directory, not its data.
        ("shared", "volumes/shared/opts.json"),
        ("appdata", "volumes/appdata"),
        // A later entry of the same volume (not yet extracted).
        ("appdata", "volumes/appdata/_data/zzz-later"),
        ("appdata", "containers/a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1/config.v2.json"),
    ] {
        let path = format!("volumes/{volume}/_data/zz-h");
        let bytes = edited(&valid, |e| {
            let at = after_data_of(e, volume);
            e.insert(at, RawEntry::hardlink(path.as_bytes(), link.as_bytes()));
        });
        t.assert_refused(&bytes,
            &[&format!(
                "refusing bundle entry `{path}`: hardlink to `{link}`, {not_earlier}"
            )],
        );
    }
    // A directory (a hardlinked directory is a loop), a name that sorts
    // earlier but was never an entry.
    for (link, extra) in [
        ("volumes/appdata/_data/sub", None),
        ("volumes/appdata/_data/aaa-never", None::<&str>),
    ] {
        let bytes = edited(&valid, |e| {
            let at = after_data_of(e, "appdata");
            e.insert(
                at,
                RawEntry::hardlink(b"volumes/appdata/_data/zz-h", link.as_bytes()),
            );
            if let Some(to) = extra {
                e.insert(at, RawEntry::symlink(link.as_bytes(), to.as_bytes()));
            }
        });
        t.assert_refused(&bytes,
            &[&format!(
                "refusing bundle entry `volumes/appdata/_data/zz-h`: hardlink to `{link}`, which is not a file of this bundle"
            )],
        );
    }
    // Regression: a link target that passes through a symlink of the
    // bundle. `zz-a -> <outside dir>`, then `zz-h` linked to
    // `zz-a/victim`: the target is "earlier" and inside the volume by its
    // name, but link(2) resolves the symlink and would hardlink a file
    // outside the data-root into the volume (a container could then write
    // it). The victim sits on the data-root's filesystem, as /etc often does.
    let victim_dir = tempfile::tempdir_in(t.root.path().parent().unwrap()).unwrap();
    let victim = victim_dir.path().join("victim");
    fs::write(&victim, b"host file\n").unwrap();
    for (symlink, link) in [
        ("zz-a", "volumes/appdata/_data/zz-a/victim"),
        ("sub/zz-a", "volumes/appdata/_data/sub/zz-a/victim"),
    ] {
        let bytes = edited(&valid, |e| {
            let at = after_data_of(e, "appdata");
            e.insert(
                at,
                RawEntry::hardlink(b"volumes/appdata/_data/zz-h", link.as_bytes()),
            );
            e.insert(
                at,
                RawEntry::symlink(
                    format!("volumes/appdata/_data/{symlink}").as_bytes(),
                    victim_dir.path().as_os_str().as_encoded_bytes(),
                ),
            );
        });
        t.assert_refused(
            &bytes,
            &[&format!(
                "refusing bundle entry `volumes/appdata/_data/zz-h`: hardlink to `{link}`, which is not a file of this bundle"
            )],
        );
    }
    assert_eq!(
        fs::metadata(&victim).unwrap().nlink(),
        1,
        "victim was linked"
    );
    // Links in container state are not allowed at all.
    let bytes = edited(&valid, |e| {
        let at = position(e, format!("containers/{APP_ID}/hostconfig.json").as_bytes()) + 1;
        e.insert(
            at,
            RawEntry::hardlink(
                format!("containers/{APP_ID}/zz").as_bytes(),
                format!("containers/{APP_ID}/config.v2.json").as_bytes(),
            ),
        );
    });
    t.assert_refused(
        &bytes,
        &[&format!(
            "refusing bundle entry `containers/{APP_ID}/zz`: a hardlink is not allowed there"
        )],
    );
}

/// The header entry rewritten through serde_json.
fn with_header(valid: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    tampered(valid, |e| {
        let mut header: serde_json::Value = serde_json::from_slice(&e[0].data).unwrap();
        edit(&mut header);
        e[0].data = serde_json::to_vec_pretty(&header).unwrap();
    })
}

#[test]
fn invalid_names_in_the_header_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let t = Target::new();
    for bad in [
        "../../etc",
        "a",
        "-dash",
        "with/slash",
        "",
        "volmig-staging/x",
    ] {
        let bytes = with_header(&valid, |h| {
            h["volumes"][0]["name"] = bad.into();
        });
        t.assert_refused(
            &bytes,
            &[
                &format!("refusing bundle entry `volumes/{bad}`"),
                &format!("invalid volume name `{bad}`"),
            ],
        );
    }
    for reserved in ["metadata.db", "backingFsBlockDev"] {
        let bytes = with_header(&valid, |h| {
            h["volumes"][0]["name"] = reserved.into();
        });
        t.assert_refused(
            &bytes,
            &[&format!(
                "refusing bundle entry `volumes/{reserved}`: `{reserved}` is dockerd's own file in volumes/, not a volume"
            )],
        );
    }
    let bytes = with_header(&valid, |h| {
        h["volumes"][1]["name"] = "appdata".into();
    });
    t.assert_refused(
        &bytes,
        &["refusing bundle entry `volumes/appdata`: volume listed twice in the header"],
    );
    let bytes = with_header(&valid, |h| {
        h["containers"][0]["id"] = "../../../etc".into();
    });
    t.assert_refused(
        &bytes,
        &["refusing bundle entry `containers/../../../etc`: container ID is not 64 hex digits"],
    );
    // Not a header at all.
    let bytes = tampered(&valid, |e| e[0].data = b"{not json".to_vec());
    t.assert_refused(&bytes, &["bundle is corrupt: header is not JSON"]);
    let bytes = tampered(&valid, |e| {
        e.remove(0);
    });
    t.assert_refused(
        &bytes,
        &["not a volmig bundle: its first entry is `containers/"],
    );
}

#[test]
fn an_opts_json_dockerd_could_not_parse_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let t = Target::new();
    for (content, go_error) in [
        (
            &br#"{"Quota":5}"#[..],
            "json: cannot unmarshal number into Go struct field",
        ),
        (b"", "unexpected end of JSON input"),
        (b"{\"MountType\":", "unexpected end of JSON input"),
        (b"[]", "json: cannot unmarshal array into Go value"),
    ] {
        let bytes = edited(&valid, |e| {
            let at = position(e, b"volumes/shared/opts.json");
            e[at].data = content.to_vec();
        });
        t.assert_refused(&bytes,
            &[
                "refusing bundle entry `volumes/shared/opts.json`: dockerd could not parse it and would not start",
                "error while unmarshaling volume options for volume: shared: ",
                go_error,
            ],
        );
    }
    // A prefix that decodes must not stand for the whole file.
    let mut huge = b"{}".to_vec();
    huge.resize((1 << 20) + 2, b' ');
    let bytes = edited(&valid, |e| {
        let at = position(e, b"volumes/shared/opts.json");
        e[at].data = huge;
    });
    t.assert_refused(
        &bytes,
        &["refusing bundle entry `volumes/shared/opts.json`: 1048578 bytes is too large for an opts.json"],
    );
    // Also where the header says there is none.
    let bytes = edited(&valid, |e| {
        let at = after_data_of(e, "appdata");
        e.insert(at, RawEntry::file(b"volumes/appdata/opts.json", b""));
    });
    t.assert_refused(
        &bytes,
        &["refusing bundle entry `volumes/appdata/opts.json`: dockerd could not parse it"],
    );
}

#[test]
fn entries_the_header_does_not_describe_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let t = Target::new();
    for path in [
        "volumes/other/_data/x",
        "volumes/other",
        "etc/passwd",
        "volumes/metadata.db",
        "volumes/appdata/evil",
        "volumes/appdata/_database",
        "containers/b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1/config.v2.json",
        "volmig-staging/x",
        "volmig-bundle/extra",
    ] {
        let bytes = edited(&valid, |e| {
            e.insert(1, RawEntry::file(path.as_bytes(), b"x"));
        });
        t.assert_refused(&bytes,
            &[&format!(
                "refusing bundle entry `{path}`: not described by the header"
            )],
        );
    }
    // The other way round: a volume the header promises but the bundle
    // does not carry (the trailer agrees: only the import can tell).
    let bytes = edited(&valid, |e| {
        e.retain(|x| !x.path.starts_with(b"volumes/pgdata"));
    });
    t.assert_refused(
        &bytes,
        &["bundle is corrupt: volume `pgdata` is described by the header but not carried in the bundle"],
    );
}

#[test]
fn a_flipped_byte_is_found_and_named() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let t = Target::new();
    // In the raw bytes: the content of sub/c.txt (3000 x 'c').
    let mut bytes = valid.clone();
    let at = bytes
        .windows(3000)
        .position(|w| w.iter().all(|&b| b == b'c'))
        .unwrap();
    bytes[at + 2999] = b'C';
    let corrupt =
        "bundle is corrupt: content of `volumes/appdata/_data/sub/c.txt` does not match its digest";
    t.assert_refused(&bytes, &[corrupt]);
    t.assert_refused_from_stdin(&bytes, &[corrupt]);
    // Same size, other content, in a file of another volume.
    let bytes = tampered(&valid, |e| {
        let at = position(e, b"volumes/pgdata/_data/PG_VERSION");
        e[at].data = b"17\n".to_vec();
    });
    t.assert_refused(
        &bytes,
        &["content of `volumes/pgdata/_data/PG_VERSION` does not match its digest"],
    );
    // Metadata only: a mode, an owner.
    for edit in [
        (|h: &mut tar::Header| h.set_mode(0o4755)) as fn(&mut tar::Header),
        |h| h.set_uid(0),
    ] {
        let bytes = tampered(&valid, |e| {
            let at = position(e, b"volumes/pgdata/_data/PG_VERSION");
            edit(&mut e[at].header);
        });
        t.assert_refused(
            &bytes,
            &["entry metadata (modes, owners, times, links or xattrs) does not match the trailer"],
        );
    }
    // The header's labels.
    let bytes = with_header(&valid, |h| {
        h["volumes"][0]["record"]["Labels"]["com.docker.compose.project"] = "evil".into();
    });
    t.assert_refused(
        &bytes,
        &["the header was altered (its digest does not match the trailer)"],
    );
    // A byte of SHA256SUMS itself.
    let bytes = tampered(&valid, |e| {
        let at = position(e, b"volmig-bundle/SHA256SUMS");
        e[at].data[0] = if e[at].data[0] == b'0' { b'1' } else { b'0' };
    });
    t.assert_refused(&bytes, &["does not match its digest"]);
}

#[test]
fn duplicate_and_out_of_order_entries_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let t = Target::new();
    let bytes = edited(&valid, |e| {
        let at = position(e, b"volumes/appdata/_data/a.txt");
        let dup = e[at].clone();
        e.insert(at + 1, dup);
    });
    t.assert_refused(&bytes,
        &["refusing bundle entry `volumes/appdata/_data/a.txt`: out of order or duplicate (after `volumes/appdata/_data/a.txt`)"],
    );
    // A second copy that would overwrite the first with other content.
    let bytes = edited(&valid, |e| {
        let at = position(e, b"volumes/appdata/_data/sub/c.txt");
        e.insert(
            at + 1,
            RawEntry::file(b"volumes/appdata/_data/a.txt", b"replaced\n"),
        );
    });
    t.assert_refused(&bytes,
        &["refusing bundle entry `volumes/appdata/_data/a.txt`: out of order or duplicate (after `volumes/appdata/_data/sub/c.txt`)"],
    );
    // A directory given twice (once with the trailing slash).
    let bytes = edited(&valid, |e| {
        let at = position(e, b"volumes/appdata/_data/sub/c.txt");
        e.insert(at + 1, RawEntry::dir(b"volumes/appdata/_data/sub/"));
    });
    t.assert_refused(
        &bytes,
        &["refusing bundle entry `volumes/appdata/_data/sub`: out of order or duplicate"],
    );
    // A second header; an entry after the trailer.
    let bytes = edited(&valid, |e| {
        let h = e[0].clone();
        e.insert(1, h);
    });
    t.assert_refused(
        &bytes,
        &["refusing bundle entry `volmig-bundle/header.json`: a second header"],
    );
    let bytes = edited(&valid, |e| {
        e.push(RawEntry::file(b"volumes/appdata/_data/zz-late", b"x"));
    });
    t.assert_refused(
        &bytes,
        &["refusing bundle entry `volumes/appdata/_data/zz-late`: entry after the trailer"],
    );
}

/// Offsets of each entry's first header block in a raw bundle.
fn entry_offsets(bytes: &[u8]) -> Vec<(Vec<u8>, u64)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    let mut pos = 0u64;
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        out.push((e.path_bytes().into_owned(), pos));
        pos = e.raw_file_position() + e.size().div_ceil(512) * 512;
    }
    out
}

#[test]
fn a_truncated_bundle_is_refused_and_nothing_is_written() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let t = Target::new();
    let offsets = entry_offsets(&valid);
    let start_of = |path: &[u8]| offsets.iter().find(|(p, _)| p == path).unwrap().1 as usize;
    let sums = start_of(b"volmig-bundle/SHA256SUMS");
    let trailer = start_of(b"volmig-bundle/trailer.json");
    let c_txt = valid
        .windows(3000)
        .position(|w| w.iter().all(|&b| b == b'c'))
        .unwrap();
    for (cut, why) in [
        (c_txt + 1000, "in the middle of a file's data"),
        (c_txt - 200, "in the middle of a header block"),
        (start_of(b"volumes/pgdata"), "at an entry boundary"),
        (sums, "just before SHA256SUMS"),
        (trailer, "just before the trailer"),
        (trailer + 512 + 10, "in the trailer's data"),
        (1024, "right after the header"),
    ] {
        t.assert_refused(
            &valid[..cut],
            &["bundle is truncated", "nothing was written"],
        );
        let bundle = work.path().join("cut.tar");
        fs::write(&bundle, &valid[..cut]).unwrap();
        // inspect --check calls it broken, not fine.
        let out = crate::common::volmig()
            .args(["inspect", "--check"])
            .arg(&bundle)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "cut {why}: {}", stderr(&out));
        if cut == sums {
            t.assert_refused_from_stdin(&valid[..cut], &["bundle is truncated"]);
        }
    }
    // Nothing at all.
    t.assert_refused(b"", &["not a volmig bundle: the input is empty"]);
}

#[test]
fn a_truncated_zstd_bundle_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let src = small_source();
    let z = work.path().join("b.zst");
    export_to(&src, &["app", "db"], &["--compress", "zstd"], &z);
    let bytes = fs::read(&z).unwrap();
    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    let t = Target::new();
    for cut in [bytes.len() / 2, bytes.len() - 1, 10] {
        t.assert_refused(&bytes[..cut], &["bundle is truncated"]);
    }
    t.assert_refused_from_stdin(&bytes[..bytes.len() / 2], &["bundle is truncated"]);
    // A flipped byte inside the compressed stream: refused too.
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    t.assert_refused(&bad, &["bundle"]);
}

#[test]
fn a_checkpoint_name_cannot_point_elsewhere() {
    // Regression: the checkpoint name comes from the header and was joined
    // to paths unchecked. `../../../containers/<other id>` made commit
    // rename the bundle's whole `containers/<other id>/` (any config and
    // hostconfig, e.g. privileged with `/` bound) into the target's
    // containers/: a new container dockerd would load at its next start.
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let mut t = Target::new();
    let troot = t.root.path();
    t.root.container(
        APP_ID,
        "app",
        &[crate::common::volume_mount("appdata", "/data", &troot)],
    );
    t.before = snapshot(&troot);
    for cp in [
        format!("../../../containers/{DB_ID}"),
        "../x".to_string(),
        "a/b".to_string(),
        ".hidden".to_string(),
    ] {
        let bytes = edited(&valid, |e| {
            let mut header: serde_json::Value = serde_json::from_slice(&e[0].data).unwrap();
            let c = header["containers"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|c| c["id"] == APP_ID)
                .unwrap();
            c["checkpoint"] = cp.clone().into();
            e[0].data = serde_json::to_vec_pretty(&header).unwrap();
            // The staged path resolves once the checkpoints dir exists.
            let at = position(e, format!("containers/{APP_ID}").as_bytes()) + 1;
            e.insert(
                at,
                RawEntry::dir(format!("containers/{APP_ID}/checkpoints").as_bytes()),
            );
        });
        t.assert_refused(
            &bytes,
            &[
                &format!("refusing bundle entry `containers/{APP_ID}/checkpoints/{cp}`"),
                "invalid checkpoint name",
            ],
        );
        assert!(!troot.join("containers").join(DB_ID).exists());
    }
}

/// Issue 7, item 7: metadata.db records were keyed by the record's own
/// `Name`: a bundle volume `vx` whose record said `keep` rewrote the
/// target's `keep` driver and labels, exit 0, under `--on-conflict fail`.
#[test]
fn a_bundle_record_naming_another_volume_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let valid = valid_bundle(work.path());
    let t = Target::new();
    let bytes = with_header(&valid, |h| {
        h["volumes"][0]["record"]["Name"] = "keep".into();
        h["volumes"][0]["record"]["Driver"] = "evil".into();
    });
    t.assert_refused(
        &bytes,
        &["carries the metadata.db record of `keep`: a record must name its own volume"],
    );
}
