//! userns-remap id shifting on tempdir data-roots (issue 8): a plain
//! source's volume imported into a `<uid>.<gid>/` subtree gets the range
//! added to owners, ACL entries and capability root ids, and exported back
//! from it gets the original ids; an id the other side cannot represent
//! refuses the command (exit 2), names the file and the id, and changes
//! nothing. The range is given with --userns-remap-size: the host's
//! /etc/subuid is not touched (the real-daemon test reads it).

use std::fs;
use std::os::unix::fs::{chown, MetadataExt};
use std::path::{Path, PathBuf};

use crate::common::{volume_mount, FakeDataRoot};
use volmig::fileattrs::{read_xattrs, set_xattr};

const REMAP: &[&str] = &[
    "--userns-remap",
    "100000:100000",
    "--userns-remap-size",
    "65536",
];
const ID: &str = "aaaa000000000000000000000000000000000000000000000000000000000001";

fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn acl_with_user(uid: u32) -> Vec<u8> {
    acl(&[
        (0x01, 6, u32::MAX),
        (0x02, 6, uid),
        (0x04, 4, u32::MAX),
        (0x08, 4, 2345),
        (0x10, 6, u32::MAX),
        (0x20, 0, u32::MAX),
    ])
}

fn cap_v3(rootid: u32) -> Vec<u8> {
    let mut v = 0x0300_0001u32.to_le_bytes().to_vec();
    v.extend_from_slice(&(1u32 << 10).to_le_bytes());
    v.extend_from_slice(&[0; 12]);
    v.extend_from_slice(&rootid.to_le_bytes());
    v
}

fn xattr(path: &Path, name: &[u8]) -> Option<Vec<u8>> {
    read_xattrs(path)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn owner(path: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

/// A plain source: container `app` with volume `data` holding files of
/// several owners, an ACL and a v3 capability.
fn source(extra_uid: Option<u32>) -> FakeDataRoot {
    let mut src = FakeDataRoot::new();
    let root = src.path();
    src.volume("data", &[])
        .container(ID, "app", &[volume_mount("data", "/data", &root)])
        .write_db();
    let data = root.join("volumes/data/_data");
    fs::create_dir(data.join("www")).unwrap();
    fs::write(data.join("www/index.html"), b"hi").unwrap();
    fs::write(data.join("root-file"), b"r").unwrap();
    fs::write(data.join("acl-file"), b"a").unwrap();
    fs::write(data.join("cap-file"), b"c").unwrap();
    std::os::unix::fs::symlink("www/index.html", data.join("link")).unwrap();
    chown(data.join("www"), Some(33), Some(33)).unwrap();
    chown(data.join("www/index.html"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::lchown(data.join("link"), Some(65534), Some(65534)).unwrap();
    chown(&data, Some(999), Some(999)).unwrap();
    set_xattr(
        &data.join("acl-file"),
        b"system.posix_acl_access",
        &acl_with_user(1234),
    )
    .unwrap();
    set_xattr(
        &data.join("cap-file"),
        b"security.capability",
        &cap_v3(1000),
    )
    .unwrap();
    if let Some(uid) = extra_uid {
        fs::write(data.join("big-id"), b"x").unwrap();
        chown(data.join("big-id"), Some(uid), Some(0)).unwrap();
    }
    src
}

fn export(root: &Path, extra: &[&str], out: &Path) -> std::process::Output {
    crate::common::volmig()
        .arg("--data-root")
        .arg(root)
        .args(extra)
        .args(["export", "app", "-o"])
        .arg(out)
        .output()
        .unwrap()
}

fn import(root: &Path, extra: &[&str], bundle: &Path) -> std::process::Output {
    crate::common::volmig()
        .arg("--data-root")
        .arg(root)
        .args(extra)
        .arg("import")
        .arg(bundle)
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A target data-root with an empty remapped subtree.
fn remapped_target() -> (tempfile::TempDir, PathBuf) {
    let outer = tempfile::tempdir().unwrap();
    let sub = outer.path().join("100000.100000");
    fs::create_dir_all(sub.join("volumes")).unwrap();
    fs::create_dir_all(sub.join("containers")).unwrap();
    (outer, sub)
}

#[test]
fn plain_to_remapped_and_back_shifts_owners_acls_and_capabilities() {
    let src = source(None);
    let work = tempfile::tempdir().unwrap();
    let b1 = work.path().join("plain.volmig");
    ok(&export(&src.path(), &[], &b1), "export from plain");

    let (outer, sub) = remapped_target();
    ok(&import(outer.path(), REMAP, &b1), "import into remapped");
    let data = sub.join("volumes/data/_data");
    assert_eq!(owner(&data), (100999, 100999));
    assert_eq!(owner(&data.join("www")), (100033, 100033));
    assert_eq!(owner(&data.join("www/index.html")), (101000, 101000));
    assert_eq!(owner(&data.join("root-file")), (100000, 100000));
    assert_eq!(owner(&data.join("link")), (165534, 165534));
    // The daemon's own directory keeps its host owner.
    assert_eq!(owner(&sub.join("volumes/data")), (0, 0));
    let mut shifted_acl = acl_with_user(101234);
    shifted_acl[32..36].copy_from_slice(&102345u32.to_le_bytes());
    assert_eq!(
        xattr(&data.join("acl-file"), b"system.posix_acl_access"),
        Some(shifted_acl)
    );
    assert_eq!(
        xattr(&data.join("cap-file"), b"security.capability"),
        Some(cap_v3(101000))
    );

    // The same bundle again: the remapped volume is identical in the
    // containers' ids.
    let again = crate::common::volmig()
        .arg("--data-root")
        .arg(outer.path())
        .args(REMAP)
        .args(["import", "--on-conflict", "skip-identical"])
        .arg(&b1)
        .output()
        .unwrap();
    ok(&again, "import again, skip-identical");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(said.contains("1 kept (identical)"), "{said}");

    // Back: the container's state moves with it, then export from the subtree.
    let cdir = sub.join("containers").join(ID);
    fs::create_dir_all(&cdir).unwrap();
    for f in ["config.v2.json", "hostconfig.json"] {
        fs::copy(src.path().join("containers").join(ID).join(f), cdir.join(f)).unwrap();
    }
    let b2 = work.path().join("remapped.volmig");
    ok(&export(outer.path(), REMAP, &b2), "export from remapped");
    let inspect = crate::common::volmig()
        .args(["--json", "inspect"])
        .arg(&b2)
        .output()
        .unwrap();
    ok(&inspect, "inspect");
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(text.contains("\"uid\": 999"), "{text}");

    let back = FakeDataRoot::new();
    ok(&import(&back.path(), &[], &b2), "import into plain");
    let orig = src.path().join("volumes/data/_data");
    let got = back.path().join("volumes/data/_data");
    for rel in [
        "",
        "www",
        "www/index.html",
        "root-file",
        "link",
        "acl-file",
        "cap-file",
    ] {
        assert_eq!(owner(&got.join(rel)), owner(&orig.join(rel)), "{rel}");
        assert_eq!(
            read_xattrs(&got.join(rel)).unwrap(),
            read_xattrs(&orig.join(rel)).unwrap(),
            "{rel}"
        );
    }
}

#[test]
fn import_refuses_an_id_the_target_range_does_not_hold() {
    let src = source(Some(70000));
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("b.volmig");
    ok(&export(&src.path(), &[], &bundle), "export from plain");
    let (outer, sub) = remapped_target();
    let out = import(outer.path(), REMAP, &bundle);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("volumes/data/_data/big-id"), "{stderr}");
    assert!(
        stderr.contains("owner uid 70000 has no host id"),
        "{stderr}"
    );
    assert!(!sub.join("volumes/data").exists());
    let staging: Vec<_> = fs::read_dir(sub.join("volmig-staging"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(staging.is_empty(), "staging left: {staging:?}");
    // The dry run says the same.
    let out = crate::common::volmig()
        .arg("--data-root")
        .arg(outer.path())
        .args(REMAP)
        .args(["import", "--dry-run"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("big-id"));
}

#[test]
fn export_refuses_a_host_id_the_container_does_not_see() {
    // A remapped source whose volume holds a file owned by host uid 5 and
    // an ACL entry for host uid 7 (outside 100000-165535).
    let src = source(None);
    let outer = tempfile::tempdir().unwrap();
    let sub = outer.path().join("100000.100000");
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(src.path())
        .arg(&sub)
        .status()
        .unwrap();
    assert!(copy.success());
    let data = sub.join("volumes/data/_data");
    let shift_all = std::process::Command::new("chown")
        .args(["-hR", "100000:100000"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(shift_all.success());
    fs::remove_file(data.join("acl-file")).unwrap();
    fs::remove_file(data.join("cap-file")).unwrap();
    chown(data.join("root-file"), Some(5), None).unwrap();
    let out_file = outer.path().join("b.volmig");
    let out = export(outer.path(), REMAP, &out_file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}", data.join("root-file").display())),
        "{stderr}"
    );
    assert!(stderr.contains("owner uid 5 is outside"), "{stderr}");
    assert!(!out_file.exists() && !outer.path().join("b.volmig.partial").exists());

    chown(data.join("root-file"), Some(100000), None).unwrap();
    fs::write(data.join("acl-file"), b"a").unwrap();
    chown(data.join("acl-file"), Some(100000), Some(100000)).unwrap();
    set_xattr(
        &data.join("acl-file"),
        b"system.posix_acl_access",
        &acl_with_user(7),
    )
    .unwrap();
    let out = export(outer.path(), REMAP, &out_file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("acl-file"), "{stderr}");
    assert!(stderr.contains("ACL user entry uid 7"), "{stderr}");
}

#[test]
fn without_the_range_export_from_a_subtree_says_how_to_give_it() {
    let outer = tempfile::tempdir().unwrap();
    fs::create_dir_all(outer.path().join("123456.123456/volumes")).unwrap();
    let out = export(
        outer.path(),
        &["--userns-remap", "123456:123456"],
        &outer.path().join("b"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--userns-remap-size"), "{stderr}");
}
