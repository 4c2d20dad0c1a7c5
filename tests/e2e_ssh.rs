//! The pieces of the end-to-end test of `volmig migrate CONTAINER --via
//! 'ssh HOST'` (issue 9): a private sshd on a loopback port
//! (`e2e/sshd.rs`) that runs a remote command and carries a byte stream
//! both ways and runs the volmig binary under test by its absolute path;
//! and two private dockerds side by side (the source and the target), each
//! on its own data-root, the target reachable through the sshd.
//! `VOLMIG_SKIP_E2E=1` skips them; without root, sshd or dockerd they fail
//! with the reason.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use crate::e2e::sshd::{require_sshd, LocalSshd, SESSION_PATH};
use crate::e2e::PrivateDaemon;

/// The volmig binary under test, by its absolute path: the remote end of
/// `--via` runs it from there, nothing is installed.
const VOLMIG: &str = env!("CARGO_BIN_EXE_volmig");

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf
}

/// `sh -c SCRIPT` with `input` on stdin (written from a thread, so a
/// command that answers while it reads cannot deadlock).
fn sh_with_input(script: &str, input: &[u8]) -> Output {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn expect_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(b))
}

#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn ssh_via_local_sshd_runs_a_command_and_carries_a_stream() {
    require_sshd();
    let t0 = Instant::now();
    let sshd = LocalSshd::start("ssh");
    let via = sshd.ssh_command();
    let data = random_bytes(8 << 20);

    // Up: the remote shell writes the stream into a file.
    let up = sshd.dir.join("up");
    let out = sh_with_input(&format!("{via} 'cat > {}'", up.display()), &data);
    expect_success("ssh 'cat > FILE'", &out);
    let got = fs::read(&up).unwrap();
    assert!(
        got == data,
        "the file the remote cat wrote differs: {} bytes, sha256 {} (sent {} bytes, {})",
        got.len(),
        sha256(&got),
        data.len(),
        sha256(&data)
    );

    // Both ways: stdin through the remote cat back to stdout.
    let out = sh_with_input(&format!("{via} cat"), &data);
    expect_success("ssh cat", &out);
    assert!(
        out.stdout == data,
        "the stream back from the remote cat differs: {} bytes, sha256 {} (sent {} bytes, {})",
        out.stdout.len(),
        sha256(&out.stdout),
        data.len(),
        sha256(&data)
    );

    // The remote command's exit code comes back.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{via} 'exit 7'"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");

    // The session's PATH has the system directories.
    let out = sshd.ssh_output("echo \"$PATH\"");
    expect_success("ssh 'echo $PATH'", &out);
    let path = String::from_utf8(out.stdout).unwrap();
    let dirs: Vec<&str> = path.trim_end().split(':').collect();
    for want in SESSION_PATH.split(':') {
        assert!(
            dirs.contains(&want),
            "the ssh session's PATH lacks {want}: {path}"
        );
    }

    // The volmig binary under test runs remotely by its absolute path.
    assert!(Path::new(VOLMIG).is_absolute(), "{VOLMIG}");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{via} {VOLMIG} --version"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    expect_success("ssh volmig --version", &out);
    let version = String::from_utf8(out.stdout).unwrap();
    // The same binary: the version and commit it names (issue 10).
    let local = Command::new(VOLMIG).arg("--version").output().unwrap();
    assert_eq!(version, String::from_utf8(local.stdout).unwrap());
    assert!(
        version.starts_with(&format!("volmig {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    println!(
        "e2e_ssh: stream test took {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
#[cfg_attr(volmig_skip_e2e, ignore = "VOLMIG_SKIP_E2E=1: needs a private dockerd")]
fn two_private_daemons_run_side_by_side() {
    let _e2e = crate::e2e::serial();
    require_sshd();
    let t0 = Instant::now();
    // Each has its own directory, socket, exec-root and containerd
    // namespace. Both on this thread: a daemon gets SIGTERM when the
    // thread that started it ends (PR_SET_PDEATHSIG).
    let src = PrivateDaemon::start("src");
    let dst = PrivateDaemon::start("dst");
    assert_ne!(src.root, dst.root);
    assert_ne!(src.sock(), dst.sock());

    for d in [&src, &dst] {
        let version = d.dk(&["version", "--format", "{{.Server.Version}}"]);
        assert!(
            version.starts_with("20.10."),
            "{}: server {version}",
            d.name
        );
        let root = d.dk(&["info", "--format", "{{.DockerRootDir}}"]);
        assert_eq!(
            Path::new(root.trim_end()),
            d.root,
            "{}: the daemon's data-root",
            d.name
        );
    }

    src.load_busybox_image("e2essh", None);
    src.dk(&[
        "run",
        "--name",
        "app",
        "-v",
        "appdata:/data",
        "e2essh",
        "sh",
        "-c",
        "echo from src > /data/f",
    ]);
    assert_eq!(
        fs::read_to_string(src.root.join("volumes/appdata/_data/f")).unwrap(),
        "from src\n"
    );
    assert_eq!(
        src.dk(&["ps", "-aq", "--filter", "name=app"])
            .lines()
            .count(),
        1
    );
    // Nothing of it on the other daemon.
    assert_eq!(dst.dk(&["ps", "-aq"]), "");
    assert_eq!(dst.dk(&["volume", "ls", "-q"]), "");
    assert_eq!(dst.dk(&["images", "-q"]), "");
    assert!(!dst.root.join("volumes/appdata").exists());

    // The target answers through an ssh session too (the remote end of
    // `--via`: no client environment is carried, the command names it).
    let sshd = LocalSshd::start("dstssh");
    let out = sshd.ssh_output(&format!(
        "DOCKER_HOST={} docker version --format '{{{{.Server.Version}}}}'",
        dst.host()
    ));
    expect_success("ssh docker version (dst)", &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("20.10."),
        "{out:?}"
    );
    println!(
        "e2e_ssh: two daemons test took {:.1}s (before stopping them)",
        t0.elapsed().as_secs_f64()
    );
}
