//! The release binary of `scripts/dist` (issue 10) runs where there is no
//! libc: in a busybox container of a private dockerd 20.10, whose image
//! holds `/bin/busybox` (Debian's busybox-static) and nothing else, it
//! verifies a real data-root bind-mounted read-only and says, byte for
//! byte, what the same binary says on the host.
//!
//! The binary is built here by `scripts/dist --binary` (the `dist`
//! profile, `+crt-static`): the same build as the tarball's, checked
//! static by the script. The first build costs minutes (LTO on 2 cores);
//! later runs reuse it. Built with `VOLMIG_SKIP_E2E=1`, this test is
//! ignored (counted as skipped, nothing built); without a daemon it fails
//! with the reason.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::e2e::{PrivateDaemon, NO_DAEMON};

const IMAGE: &str = "volmig-static-busybox";
/// The data-root verified: dockerd 20.10's own, with its volumes lost.
const FIXTURE: &str = "fixtures/lost-volumes";
/// Pinned so that neither run asks a `dockerd` binary for its version
/// (the host has one, the container none).
const DAEMON_VERSION: &str = "20.10";

/// `scripts/dist --binary`: builds the static binary and returns its path.
fn build_static_binary() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(repo.join("scripts/dist"))
        .arg("--binary")
        .current_dir(repo)
        .output()
        .expect("cannot run scripts/dist");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scripts/dist --binary failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let path = stdout
        .lines()
        .find_map(|l| l.strip_prefix("binary: "))
        .unwrap_or_else(|| panic!("scripts/dist --binary named no `binary: PATH`:\n{stdout}"));
    repo.join(path)
}

/// `volmig --daemon-version 20.10 -H <none> --data-root ROOT ARGS` as
/// arguments (the same on the host and in the container).
fn verify_args(root: &Path, json: bool) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--daemon-version".into(),
        DAEMON_VERSION.into(),
        "-H".into(),
        NO_DAEMON.into(),
        "--data-root".into(),
        root.display().to_string(),
    ];
    if json {
        args.push("--json".into());
    }
    args.extend(["verify".into(), "--all".into()]);
    args
}

/// Host paths that the fixture's containers bind and that exist on the
/// host (`share` binds /usr/share): verify checks a bind source on the
/// filesystem it runs on, so the container sees them too, read-only.
/// Without this the busybox run rightly says `bind source path does not
/// exist: /usr/share` where the host run says ok.
const HOST_BIND_SOURCES: &[&str] = &["/usr/share"];

/// `docker run` of `cmd` in the busybox image with the binary at /volmig
/// and each of `mounts` read-only at its host path.
fn run_in_busybox(d: &PrivateDaemon, bin: &Path, mounts: &[&Path], cmd: &[String]) -> Output {
    let mut args = vec![
        "run".to_string(),
        "--rm".into(),
        "--network=none".into(),
        "-v".into(),
        format!("{}:/volmig:ro", bin.display()),
    ];
    for m in mounts {
        args.push("-v".into());
        args.push(format!("{}:{}:ro", m.display(), m.display()));
    }
    args.push(IMAGE.into());
    args.extend_from_slice(cmd);
    d.docker().args(&args).output().unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn the_static_binary_verifies_a_data_root_in_a_container_without_libc_as_on_the_host() {
    let _e2e = crate::e2e::serial();
    let bin = build_static_binary();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(FIXTURE)
        .canonicalize()
        .unwrap();

    let d = PrivateDaemon::start("static");
    d.load_busybox_image(IMAGE, None);

    // The container has no libc and no dynamic loader: the proof that
    // what runs there needs none. The dynamic test binary cannot start.
    let sh =
        |script: &str| run_in_busybox(&d, &bin, &[], &["sh".into(), "-c".into(), script.into()]);
    let libs = sh("find / -xdev -name 'libc.so*'; find / -xdev -name 'ld-linux*'; ls /");
    assert!(libs.status.success(), "{}", text(&libs.stderr));
    assert!(
        !text(&libs.stdout).contains("libc.so") && !text(&libs.stdout).contains("ld-linux"),
        "the busybox image holds a libc:\n{}",
        text(&libs.stdout)
    );
    let dynamic = assert_cmd::cargo::cargo_bin("volmig");
    let out = d
        .docker()
        .args(["run", "--rm", "--network=none", "-v"])
        .arg(format!("{}:/volmig-dynamic:ro", dynamic.display()))
        .args([IMAGE, "/volmig-dynamic", "--version"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the dynamic binary ran without libc: the container is not the test it claims to be"
    );

    let version = run_in_busybox(&d, &bin, &[], &["/volmig".into(), "--version".into()]);
    assert!(
        version.status.success() && text(&version.stdout).starts_with("volmig "),
        "volmig --version in busybox ({}): {}{}",
        version.status,
        text(&version.stdout),
        text(&version.stderr)
    );

    for json in [false, true] {
        let args = verify_args(&root, json);
        let host = Command::new(&bin).args(&args).output().unwrap();
        let mut in_container = vec!["/volmig".to_string()];
        in_container.extend(args.iter().cloned());
        // The fixture at its host path: the data-root's own path is in
        // the output, and must read the same.
        let mut mounts = vec![root.as_path()];
        mounts.extend(HOST_BIND_SOURCES.iter().map(Path::new));
        let inside = run_in_busybox(&d, &bin, &mounts, &in_container);
        println!(
            "verify{}: host exit {:?}, busybox exit {:?}",
            if json { " --json" } else { "" },
            host.status.code(),
            inside.status.code()
        );
        // lost-volumes: every container has a volume dockerd cannot get
        // (exit 1, "found broken"), with the daemon's own text.
        assert_eq!(host.status.code(), Some(1), "host: {}", text(&host.stderr));
        assert!(
            text(&host.stdout).contains("no such volume"),
            "host verify predicted no lost volume:\n{}",
            text(&host.stdout)
        );
        assert_eq!(
            inside.status.code(),
            host.status.code(),
            "exit code in busybox differs; its stderr:\n{}",
            text(&inside.stderr)
        );
        assert_eq!(
            text(&inside.stdout),
            text(&host.stdout),
            "stdout in busybox differs from the host's"
        );
        assert_eq!(
            text(&inside.stderr),
            text(&host.stderr),
            "stderr in busybox differs from the host's"
        );
    }
}
