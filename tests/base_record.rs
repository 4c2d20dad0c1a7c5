//! Issue 9, import's side of round 1: a bundle exported with
//! `--manifest-out` records, per volume, the base a later delta applies
//! onto (`<R>/volmig-bases/<volume>.manifest`): the export's manifest
//! entry for entry, content and chunk digests included, but with the
//! target's inodes and ctimes, and the same tree digest. A bundle without
//! a round records nothing (and an old base goes); a base that cannot be
//! recorded is a warning, never a failed import; nothing is written under
//! `volumes/` but the volumes.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::{json_run, volume_mount, FakeDataRoot};
use serde_json::Value;
use volmig::fileattrs::{set_mtime, set_xattr};
use volmig::manifest::io::VolumeEnd;
use volmig::manifest::{Entry, ManifestHeader, ManifestReader, Record, CHUNK};

const APP: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const MIB: usize = 1 << 20;

/// Container `app` with volumes `files` (every kind of entry: a 3 MiB
/// file, a sparse one, a hardlink, a symlink, a fifo, an xattr, owners)
/// and `db` (999:999 0700, as postgres wants it).
fn source() -> FakeDataRoot {
    let mut src = FakeDataRoot::new();
    let root = src.path();
    src.volume("files", &[("tier", "web")])
        .volume("db", &[])
        .container(
            APP,
            "app",
            &[
                volume_mount("files", "/srv", &root),
                volume_mount("db", "/var/lib/db", &root),
            ],
        )
        .write_db();
    let d = root.join("volumes/files/_data");
    fs::write(d.join("a.txt"), b"alpha\n").unwrap();
    set_xattr(&d.join("a.txt"), b"user.note", b"kept").unwrap();
    let big: Vec<u8> = (0..3 * MIB).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(d.join("big.bin"), &big).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(d.join("sparse.img")).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", 4 * MIB as u64 + 10).unwrap();
        f.set_len(5 * MIB as u64).unwrap();
    }
    fs::create_dir(d.join("sub")).unwrap();
    fs::hard_link(d.join("a.txt"), d.join("sub/hard")).unwrap();
    std::os::unix::fs::symlink("../a.txt", d.join("sub/link")).unwrap();
    nix::unistd::mkfifo(
        &d.join("sub/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    std::os::unix::fs::chown(d.join("sub"), Some(1000), Some(1000)).unwrap();
    set_mtime(&d.join("sub"), 1_600_000_000, 123).unwrap();
    let db = root.join("volumes/db/_data");
    fs::write(db.join("PG_VERSION"), b"16\n").unwrap();
    for p in [db.join("PG_VERSION"), db.clone()] {
        std::os::unix::fs::chown(&p, Some(999), Some(999)).unwrap();
    }
    fs::set_permissions(&db, fs::Permissions::from_mode(0o700)).unwrap();
    src
}

/// Exports `app` from `root` to `bundle` (with `extra` options).
fn export(root: &Path, pre: &[&str], extra: &[&str], bundle: &Path) {
    let out = crate::common::volmig()
        .arg("--data-root")
        .arg(root)
        .args(pre)
        .args(["export", "app", "-o"])
        .arg(bundle)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn import(root: &Path, pre: &[&str], extra: &[&str], bundle: &Path) -> (i32, Value) {
    json_run(
        crate::common::volmig()
            .arg("--data-root")
            .arg(root)
            .args(pre)
            .arg("import")
            .arg(bundle)
            .args(extra),
    )
}

/// One volume of a manifest: its entries and end record.
struct Volume {
    name: String,
    entries: Vec<Entry>,
    end: VolumeEnd,
}

fn read_manifest(path: &Path) -> (ManifestHeader, Vec<Volume>) {
    let mut r = ManifestReader::open(path).unwrap();
    let header = r.header().clone();
    let mut volumes: Vec<Volume> = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        match rec {
            Record::Volume(v) => volumes.push(Volume {
                name: v.volume,
                entries: Vec::new(),
                end: VolumeEnd {
                    end: String::new(),
                    entries: 0,
                    tree: String::new(),
                },
            }),
            Record::Entry(e) => volumes.last_mut().unwrap().entries.push(e),
            Record::End(e) => volumes.last_mut().unwrap().end = e,
        }
    }
    (header, volumes)
}

/// The entry without the stat of the side that wrote it.
fn described(e: &Entry) -> Entry {
    Entry {
        ctime: None,
        ino: None,
        ..e.clone()
    }
}

fn at(data: &Path, rel: &[u8]) -> PathBuf {
    match rel {
        b"" => data.to_path_buf(),
        _ => data.join(std::ffi::OsStr::from_bytes(rel)),
    }
}

/// Asserts `base` is `source`'s volume with the target's stat: same
/// entries but for ctime and inode, which are those of `data`'s files.
fn assert_base_of(base: &Volume, source: &Volume, data: &Path) {
    assert_eq!(base.name, source.name);
    assert_eq!(base.entries.len(), source.entries.len(), "{}", base.name);
    for (b, s) in base.entries.iter().zip(&source.entries) {
        assert_eq!(described(b), described(s));
        let m = fs::symlink_metadata(at(data, &b.path)).unwrap();
        assert_eq!(b.ino, Some(m.ino()), "{:?}", b.path);
        assert_eq!(
            b.ctime,
            Some((m.ctime(), m.ctime_nsec() as u32)),
            "{:?}",
            b.path
        );
        assert_ne!(b.ino, s.ino, "the target's inode, not the source's");
    }
    assert_eq!(base.end.entries, source.end.entries);
}

/// The names directly in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_round_import_records_each_volume_as_it_laid_it_down() {
    let src = source();
    let work = tempfile::tempdir().unwrap();
    let (bundle, m) = (work.path().join("r1.vmb"), work.path().join("r1.manifest"));
    export(
        &src.path(),
        &[],
        &["--manifest-out", m.to_str().unwrap()],
        &bundle,
    );
    let target = FakeDataRoot::new();
    let (code, doc) = import(&target.path(), &[], &[], &bundle);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["warnings"], serde_json::json!([]), "{doc:#}");
    assert_eq!(doc["bases"].as_array().unwrap().len(), 2, "{doc:#}");

    let (m_header, m_volumes) = read_manifest(&m);
    assert_eq!(m_volumes.len(), 2);
    let bases = target.path().join("volmig-bases");
    assert_eq!(names(&bases), ["db.manifest", "files.manifest"]);
    for source in &m_volumes {
        let (header, volumes) = read_manifest(&bases.join(format!("{}.manifest", source.name)));
        assert_eq!(header.bundle, m_header.bundle, "the round of the bundle");
        assert_eq!(header.side, "target");
        assert_eq!(header.data_root, target.path().display().to_string());
        assert_eq!(header.host, m_header.host, "this host (the same one here)");
        assert_eq!(volumes.len(), 1, "one volume per base");
        let data = target
            .path()
            .join("volumes")
            .join(&source.name)
            .join("_data");
        assert_base_of(&volumes[0], source, &data);
        assert_eq!(volumes[0].end.tree, source.end.tree, "same tree digest");
    }

    // The large files' chunk digests are the source's: all of the 3 MiB
    // file's, the sparse file's with its holes as `None` (data only in
    // its first chunk and in the one at 4 MiB).
    let files = &read_manifest(&bases.join("files.manifest")).1[0];
    let entry = |p: &[u8]| files.entries.iter().find(|e| e.path == p).unwrap();
    let big = entry(b"big.bin");
    assert_eq!(big.chunks.len() as u64, 3 * MIB as u64 / CHUNK);
    assert!(big.chunks.iter().all(Option::is_some));
    let sparse = entry(b"sparse.img");
    let tail = (4 * MIB as u64 + 10) / CHUNK;
    assert_eq!(
        sparse
            .chunks
            .iter()
            .map(Option::is_some)
            .collect::<Vec<_>>(),
        (0..5 * MIB as u64 / CHUNK)
            .map(|i| i == 0 || i == tail)
            .collect::<Vec<_>>()
    );
    assert_eq!(entry(b"sub/hard").link.as_deref(), Some(&b"a.txt"[..]));

    // Nothing under volumes/ but the volumes (and metadata.db); no
    // staging or temporary file left.
    assert_eq!(
        names(&target.path().join("volumes")),
        ["db", "files", "metadata.db"]
    );
    assert!(!target.path().join("volmig-staging").exists());
}

#[test]
fn a_bundle_without_a_round_records_nothing_and_forgets_an_old_base() {
    let src = source();
    let work = tempfile::tempdir().unwrap();
    let plain = work.path().join("plain.vmb");
    export(&src.path(), &[], &[], &plain);
    let target = FakeDataRoot::new();
    let (code, doc) = import(&target.path(), &[], &[], &plain);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["bases"], serde_json::json!([]));
    assert!(!target.path().join("volmig-bases").exists());

    // A round's base, then a plain bundle over it: the base no longer
    // describes the volume and goes.
    let (round, m) = (work.path().join("r.vmb"), work.path().join("r.manifest"));
    export(
        &src.path(),
        &[],
        &["--manifest-out", m.to_str().unwrap()],
        &round,
    );
    let (code, doc) = import(&target.path(), &[], &["--on-conflict", "replace"], &round);
    assert_eq!(code, 0, "{doc:#}");
    let base = target.path().join("volmig-bases/files.manifest");
    assert!(base.exists());
    let (code, doc) = import(&target.path(), &[], &["--on-conflict", "replace"], &plain);
    assert_eq!(code, 0, "{doc:#}");
    assert!(names(&target.path().join("volmig-bases")).is_empty());
    assert_eq!(
        names(&target.path().join("volumes")),
        ["db", "files", "metadata.db"]
    );
}

#[test]
fn a_base_that_cannot_be_recorded_is_a_warning_and_the_import_stands() {
    let src = source();
    let work = tempfile::tempdir().unwrap();
    let (bundle, m) = (work.path().join("r.vmb"), work.path().join("r.manifest"));
    export(
        &src.path(),
        &[],
        &["--manifest-out", m.to_str().unwrap()],
        &bundle,
    );
    let target = FakeDataRoot::new();
    // Something that is not a directory where the bases go.
    fs::write(target.path().join("volmig-bases"), b"in the way").unwrap();
    let (code, doc) = import(&target.path(), &[], &[], &bundle);
    assert_eq!(code, 0, "the import succeeded: {doc:#}");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["bases"], serde_json::json!([]));
    let warnings: Vec<&str> = doc["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    for w in &warnings {
        assert!(
            w.contains("was not recorded") && w.contains("deltas onto this target will be refused"),
            "{w}"
        );
    }
    assert!(target.path().join("volumes/files/_data/big.bin").is_file());

    // In text too.
    let target = FakeDataRoot::new();
    fs::write(target.path().join("volmig-bases"), b"in the way").unwrap();
    let out = target.volmig().arg("import").arg(&bundle).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warning: the base for deltas of volume `files` was not recorded"),
        "{text}"
    );
}

#[test]
fn a_kept_identical_volume_gets_the_new_rounds_base() {
    let src = source();
    let work = tempfile::tempdir().unwrap();
    let (r1, m1) = (work.path().join("r1.vmb"), work.path().join("r1.manifest"));
    let (r2, m2) = (work.path().join("r2.vmb"), work.path().join("r2.manifest"));
    export(
        &src.path(),
        &[],
        &["--manifest-out", m1.to_str().unwrap()],
        &r1,
    );
    export(
        &src.path(),
        &[],
        &["--manifest-out", m2.to_str().unwrap()],
        &r2,
    );
    let target = FakeDataRoot::new();
    let (code, doc) = import(&target.path(), &[], &[], &r1);
    assert_eq!(code, 0, "{doc:#}");
    let before = read_manifest(&target.path().join("volmig-bases/files.manifest"));
    let (code, doc) = import(
        &target.path(),
        &[],
        &["--on-conflict", "skip-identical"],
        &r2,
    );
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["skipped_identical"].as_array().unwrap().len(), 2);
    let after = read_manifest(&target.path().join("volmig-bases/files.manifest"));
    assert_eq!(after.0.bundle, read_manifest(&m2).0.bundle, "the new round");
    assert_ne!(after.0.bundle, before.0.bundle);
    // The same files: the same inodes.
    let inos = |v: &Volume| v.entries.iter().map(|e| e.ino).collect::<Vec<_>>();
    assert_eq!(inos(&after.1[0]), inos(&before.1[0]));
}

#[test]
fn a_remapped_target_records_the_ids_it_laid_down() {
    let src = source();
    let work = tempfile::tempdir().unwrap();
    let (bundle, m) = (work.path().join("r.vmb"), work.path().join("r.manifest"));
    export(
        &src.path(),
        &[],
        &["--manifest-out", m.to_str().unwrap()],
        &bundle,
    );
    let outer = tempfile::tempdir().unwrap();
    let outer_path = fs::canonicalize(outer.path()).unwrap();
    let sub = outer_path.join("100000.100000");
    fs::create_dir_all(sub.join("volumes")).unwrap();
    fs::create_dir_all(sub.join("containers")).unwrap();
    let remap = [
        "--userns-remap",
        "100000:100000",
        "--userns-remap-size",
        "65536",
    ];
    let (code, doc) = import(&outer_path, &remap, &[], &bundle);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["warnings"], serde_json::json!([]), "{doc:#}");
    let (_, source) = read_manifest(&m);
    let (_, base) = read_manifest(&sub.join("volmig-bases/db.manifest"));
    let db = source.iter().find(|v| v.name == "db").unwrap();
    for (b, s) in base[0].entries.iter().zip(&db.entries) {
        assert_eq!((b.uid, b.gid), (s.uid + 100_000, s.gid + 100_000));
        let m = fs::symlink_metadata(at(&sub.join("volumes/db/_data"), &b.path)).unwrap();
        assert_eq!((b.uid, b.gid), (m.uid(), m.gid()), "what is on disk");
    }
    assert!(!outer_path.join("volmig-bases").exists(), "in the subtree");
}

#[test]
fn a_bind_volumes_base_describes_its_device_directory() {
    let host = tempfile::tempdir().unwrap();
    let host_path = fs::canonicalize(host.path()).unwrap();
    let device = host_path.join("srv/app");
    fs::create_dir_all(device.join("sub")).unwrap();
    fs::write(device.join("sub/db.bin"), vec![7u8; 2 * MIB + 1]).unwrap();
    let mut src = FakeDataRoot::new();
    let root = src.path();
    src.volume("app", &[])
        .opts_json(
            "app",
            &format!(
                r#"{{"MountType":"none","MountOpts":"bind","MountDevice":"{}","Quota":{{"Size":0}}}}"#,
                device.display()
            ),
        )
        .container(APP, "app", &[volume_mount("app", "/srv", &root)])
        .write_db();
    let (bundle, m) = (host_path.join("b.vmb"), host_path.join("b.manifest"));
    export(
        &root,
        &[],
        &["--manifest-out", m.to_str().unwrap()],
        &bundle,
    );
    let target = FakeDataRoot::new();
    let moved = host_path.join("moved/app");
    let map = format!("--map-path={}={}", device.display(), moved.display());
    let (code, doc) = import(&target.path(), &[], &[&map], &bundle);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["warnings"], serde_json::json!([]), "{doc:#}");
    let (_, source) = read_manifest(&m);
    let (_, base) = read_manifest(&target.path().join("volmig-bases/app.manifest"));
    assert_base_of(&base[0], &source[0], &moved);
    assert_eq!(base[0].end.tree, source[0].end.tree);
    assert_eq!(base[0].entries.len(), 3, "_data, sub, sub/db.bin");
}
