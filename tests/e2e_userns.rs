//! End-to-end against real, private dockerds 20.10 (issue 8): a volume
//! moves from a plain daemon to one started with `--userns-remap=default`
//! and back, and the remapped daemon's containers see and use it as the
//! plain one's did.
//!
//! The remapped daemon creates the `dockremap` user and its /etc/subuid and
//! /etc/subgid ranges itself (useradd and usermod, Debian's `passwd`),
//! and they stay on the host afterwards, as with any daemon run that way;
//! volmig reads the ranges from those files (no --userns-remap-size). The
//! volume holds files of several owners, a symlink, POSIX ACLs (access and
//! default, set with `setfacl`: package `acl`) and file capabilities v2 and
//! v3 (`setcap -n`: package `libcap2-bin`). `VOLMIG_SKIP_E2E=1` skips it.

use std::fs;
use std::os::unix::fs::{chown, lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::e2e::{volmig_run, PrivateDaemon};
use volmig::fileattrs::read_xattrs;

/// The files checked on both sides, with the ids a container sees.
const OWNERS: &[(&str, &str)] = &[
    ("", "999:999"),
    ("www", "33:33"),
    ("www/index.html", "1000:1000"),
    ("root-file", "0:0"),
    ("acl-file", "0:0"),
    ("shared", "0:0"),
    ("cap-v2", "0:0"),
    ("cap-v3", "0:0"),
    ("nobody-link", "65534:65534"),
];

fn require_tools() {
    for (tool, package) in [
        ("setfacl", "acl"),
        ("getfacl", "acl"),
        ("setcap", "libcap2-bin"),
        ("getcap", "libcap2-bin"),
        ("useradd", "passwd"),
        ("usermod", "passwd"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "e2e: `{tool}` is missing (Debian package {package}; scripts/test installs it)"
        );
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The plain source volume's files, written on the host (a plain
/// daemon's host ids are its containers' ids).
fn populate(data: &Path) {
    fs::create_dir(data.join("www")).unwrap();
    fs::write(data.join("www/index.html"), b"<h1>hi</h1>").unwrap();
    fs::write(data.join("root-file"), b"root").unwrap();
    fs::write(data.join("acl-file"), b"acl\n").unwrap();
    fs::set_permissions(data.join("acl-file"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(data.join("shared")).unwrap();
    fs::copy("/bin/busybox", data.join("cap-v2")).unwrap();
    fs::copy("/bin/busybox", data.join("cap-v3")).unwrap();
    symlink("www/index.html", data.join("nobody-link")).unwrap();
    chown(data, Some(999), Some(999)).unwrap();
    chown(data.join("www"), Some(33), Some(33)).unwrap();
    chown(data.join("www/index.html"), Some(1000), Some(1000)).unwrap();
    lchown(data.join("nobody-link"), Some(65534), Some(65534)).unwrap();
    let acl = path_str(&data.join("acl-file")).to_string();
    run("setfacl", &["-m", "u:1234:rw,g:2345:r", &acl]);
    let shared = path_str(&data.join("shared")).to_string();
    run("setfacl", &["-m", "u:1234:rwx", &shared]);
    run("setfacl", &["-d", "-m", "u:1234:rwx", &shared]);
    run(
        "setcap",
        &["cap_net_raw=ep", path_str(&data.join("cap-v2"))],
    );
    run(
        "setcap",
        &[
            "-n",
            "1000",
            "cap_net_bind_service=ep",
            path_str(&data.join("cap-v3")),
        ],
    );
}

fn getfacl(path: &Path) -> String {
    run("getfacl", &["-n", "-p", "--omit-header", path_str(path)])
}

fn capability(path: &Path) -> Option<Vec<u8>> {
    read_xattrs(path)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == b"security.capability")
        .map(|(_, v)| v)
}

/// `stat -c '%u:%g'` of every OWNERS path inside a container on `volume`.
fn owners_in_container(d: &PrivateDaemon, volume: &str) -> Vec<(String, String)> {
    let paths: Vec<String> = OWNERS.iter().map(|(p, _)| format!("/data/{p}")).collect();
    let script = format!("stat -c '%u:%g' {}", paths.join(" "));
    let mount = format!("{volume}:/data");
    let out = d.dk(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &mount,
        "bb",
        "sh",
        "-c",
        &script,
    ]);
    OWNERS
        .iter()
        .map(|(p, _)| p.to_string())
        .zip(out.lines().map(str::to_string))
        .collect()
}

fn expect_owners(got: &[(String, String)], what: &str) {
    let want: Vec<(String, String)> = OWNERS
        .iter()
        .map(|(p, o)| (p.to_string(), o.to_string()))
        .collect();
    assert_eq!(
        got,
        want.as_slice(),
        "{what}: ids seen inside the container"
    );
}

fn volmig_ok(root: &Path, args: &[&str], what: &str) -> String {
    let (code, out, err) = volmig_run(root, args);
    assert_eq!(
        code, 0,
        "{what}: volmig {args:?} exited {code}\n{out}\n{err}"
    );
    err
}

#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn userns_remap_round_trip_plain_to_remapped_and_back() {
    let _e2e = crate::e2e::serial();
    require_tools();
    let t0 = Instant::now();

    // 1. The plain source.
    let mut plain = PrivateDaemon::start("userns-plain");
    plain.load_busybox_image("bb", None);
    plain.dk(&["volume", "create", "data"]);
    plain.dk(&[
        "create",
        "--name",
        "app",
        "--network",
        "none",
        "-v",
        "data:/data",
        "bb",
    ]);
    let plain_data = plain.root.join("volumes/data/_data");
    populate(&plain_data);
    expect_owners(&owners_in_container(&plain, "data"), "plain source");
    plain.stop();
    let work = PathBuf::from(&plain.dir);
    let b1 = work.join("plain.volmig");
    volmig_ok(
        &plain.root,
        &["export", "app", "-o", path_str(&b1)],
        "export from plain",
    );

    // 2. The remapped daemon: dockerd makes dockremap and its ranges.
    let mut remapped = PrivateDaemon::new("userns-remapped", None);
    remapped.set_config("{\"userns-remap\": \"default\"}\n");
    remapped.start_again();
    let docker_root = PathBuf::from(remapped.dk(&["info", "-f", "{{.DockerRootDir}}"]).trim());
    let subtree = docker_root
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let remap = subtree.replacen('.', ":", 1);
    let host_root: u32 = subtree.split('.').next().unwrap().parse().unwrap();
    println!(
        "remapped daemon: {} (subuid: {})",
        docker_root.display(),
        fs::read_to_string("/etc/subuid").unwrap().trim()
    );
    remapped.load_busybox_image("bb", None);
    // What dockerd itself makes: the volume directory stays the host
    // root's, `_data` is the remapped root's. volmig shifts only `_data`
    // and below.
    remapped.dk(&["volume", "create", "probe"]);
    let probe = docker_root.join("volumes/probe");
    let owner = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner(&probe), (0, 0));
    assert_eq!(owner(&probe.join("_data")), (host_root, host_root));
    remapped.dk(&["volume", "rm", "probe"]);
    remapped.stop();
    let remapped_args = ["--userns-remap", remap.as_str()];
    let mut args = remapped_args.to_vec();
    args.extend(["import", path_str(&b1)]);
    volmig_ok(&remapped.root, &args, "import into remapped");
    let mut args = remapped_args.to_vec();
    args.extend(["scan"]);
    volmig_ok(&remapped.root, &args, "scan of the remapped target");

    let r_data = docker_root.join("volumes/data/_data");
    assert!(
        getfacl(&r_data.join("acl-file")).contains(&format!("user:{}:rw-", host_root + 1234)),
        "{}",
        getfacl(&r_data.join("acl-file"))
    );
    let cap = run("getcap", &["-n", path_str(&r_data.join("cap-v3"))]);
    assert!(
        cap.contains(&format!("[rootid={}]", host_root + 1000)),
        "{cap}"
    );
    let cap = run("getcap", &["-n", path_str(&r_data.join("cap-v2"))]);
    assert!(cap.contains(&format!("[rootid={host_root}]")), "{cap}");

    // 3. The remapped daemon's containers see the original ids, write as
    //    root, and the ACLs grant uid 1234 what they granted it before.
    remapped.start_again();
    expect_owners(&owners_in_container(&remapped, "data"), "remapped target");
    remapped.dk(&[
        "create",
        "--name",
        "app2",
        "--network",
        "none",
        "-v",
        "data:/data",
        "bb",
    ]);
    let as_root = "echo new > /data/written-by-root && chown 4321:4321 /data/written-by-root && stat -c %u:%g /data/written-by-root";
    let out = remapped.dk(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "data:/data",
        "bb",
        "sh",
        "-c",
        as_root,
    ]);
    assert_eq!(out.trim(), "4321:4321");
    let as_1234 =
        "echo via-acl >> /data/acl-file && echo x > /data/shared/by-1234 && cat /data/acl-file";
    let out = remapped.dk(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-u",
        "1234:1234",
        "-v",
        "data:/data",
        "bb",
        "sh",
        "-c",
        as_1234,
    ]);
    assert_eq!(out, "acl\nvia-acl\n");
    assert_eq!(
        fs::metadata(r_data.join("written-by-root"))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .unwrap(),
        host_root + 4321
    );
    remapped.stop();

    // 4. Back: export from the remapped subtree, import into a plain one.
    let b2 = work.join("remapped.volmig");
    let mut args = remapped_args.to_vec();
    args.extend(["export", "app2", "-o", path_str(&b2)]);
    volmig_ok(&remapped.root, &args, "export from remapped");
    let mut back = PrivateDaemon::new("userns-back", None);
    volmig_ok(&back.root, &["import", path_str(&b2)], "import into plain");
    back.start_again();
    back.load_busybox_image("bb", None);
    expect_owners(&owners_in_container(&back, "data"), "plain target");
    let b_data = back.root.join("volumes/data/_data");
    let stat = run(
        "stat",
        &[
            "-c",
            "%u:%g",
            path_str(&b_data.join("written-by-root")),
            path_str(&b_data.join("shared/by-1234")),
        ],
    );
    assert_eq!(stat, "4321:4321\n1234:1234\n");
    for rel in ["acl-file", "shared"] {
        assert_eq!(
            getfacl(&b_data.join(rel)),
            getfacl(&plain_data.join(rel)),
            "{rel}"
        );
    }
    assert!(getfacl(&b_data.join("shared/by-1234")).contains("user:1234:rwx"));
    for rel in ["cap-v2", "cap-v3"] {
        assert_eq!(
            capability(&b_data.join(rel)),
            capability(&plain_data.join(rel)),
            "{rel}"
        );
    }
    back.stop();
    println!("userns round trip: {:.1}s", t0.elapsed().as_secs_f64());
}
