//! A private sshd per test (`LocalSshd`), for `volmig migrate --via 'ssh
//! HOST'`: `/usr/sbin/sshd -D -e -f <own config>` on a free port of
//! 127.0.0.1, root login by a key of its own only, everything (config,
//! host key, client key pair, authorized_keys, known_hosts, pidfile, log)
//! in `/var/tmp/volmig-e2e/<name>-<pid>`. Nothing of the host's ssh setup
//! is read or changed: not /etc/ssh, not ~/.ssh (the client gets `-F
//! /dev/null` and a known_hosts file of its own, which pins the host key).
//! The sshd is stopped by the pid the harness started, never by name.
//!
//! A session's PATH is `/usr/sbin:/usr/bin:/sbin:/bin` (`SetEnv`): the
//! remote command runs the volmig binary under test by its absolute path
//! (`CARGO_BIN_EXE_volmig`), so nothing is installed, and finds docker,
//! tar and the like there.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{alive, remove_stale_dirs_once, tail, StartFailure, BASE, SKIP_ENV};

/// The server binary (Debian package openssh-server).
pub const SSHD: &str = "/usr/sbin/sshd";
/// The client and the key generator (Debian package openssh-client).
pub const SSH: &str = "/usr/bin/ssh";
pub const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
/// sshd's privilege separation directory (compiled in; Debian's package
/// makes it at boot through tmpfiles.d, which a container may not run).
const PRIVSEP_DIR: &str = "/run/sshd";
/// The PATH of every ssh session.
pub const SESSION_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// How long sshd gets to accept a login.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long sshd gets to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Ports tried when another process takes the free port first.
const PORT_ATTEMPTS: usize = 3;

/// Fails the test at once, loudly, when a private sshd cannot be had here.
pub fn require_sshd() {
    let why = |msg: String| -> ! {
        panic!(
            "e2e: a private sshd cannot be had: {msg}\n\
             (scripts/test installs openssh-server and openssh-client; set {SKIP_ENV}=1 to skip these tests)"
        )
    };
    if unsafe { libc::geteuid() } != 0 {
        why("not running as root (the tests log in as root)".into());
    }
    if !Path::new(SSHD).is_file() {
        why(format!("{SSHD} is missing (Debian package openssh-server)"));
    }
    for bin in [SSH, SSH_KEYGEN] {
        if !Path::new(bin).is_file() {
            why(format!("{bin} is missing (Debian package openssh-client)"));
        }
    }
}

/// An sshd started by this test process on `127.0.0.1:port` (it gets
/// SIGTERM when the thread that started it ends, as a `PrivateDaemon`
/// does: start it on the thread that uses it). Dropping it
/// stops the sshd (SIGTERM to its pid, SIGKILL after 5 s) and removes its
/// directory (unless `VOLMIG_E2E_KEEP` is set).
pub struct LocalSshd {
    pub name: String,
    /// `/var/tmp/volmig-e2e/<name>-<pid>`.
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl LocalSshd {
    /// Starts an sshd and waits until a login with `ssh_command()` works;
    /// panics with the sshd log when it does not within 20 s.
    pub fn start(name: &str) -> LocalSshd {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "LocalSshd name `{name}`: letters, digits, - and _ only (it is part of shell words)"
        );
        remove_stale_dirs_once();
        let dir = Path::new(BASE).join(format!("{name}-{}", std::process::id()));
        assert!(
            !dir.exists(),
            "{} exists: two daemons named {name} in one run",
            dir.display()
        );
        fs::create_dir_all(&dir).unwrap();
        let mut d = LocalSshd {
            name: name.to_string(),
            dir,
            port: 0,
            child: None,
        };
        d.make_keys();
        make_privsep_dir();
        let mut attempt = 1;
        let failure = loop {
            d.port = free_port();
            match d.try_start() {
                Ok(()) => return d,
                // The port was taken between our probe and sshd's bind.
                Err(f) if f.log.contains("Address already in use") && attempt < PORT_ATTEMPTS => {
                    attempt += 1;
                }
                Err(f) => break f,
            }
        };
        panic!(
            "e2e: sshd `{}` did not come up on 127.0.0.1:{} ({}); sshd log:\n{}",
            d.name,
            d.port,
            match failure.exit_code {
                Some(c) => format!("it exited with {c}"),
                None => format!("no login within {}s", START_TIMEOUT.as_secs()),
            },
            tail(&failure.log, 40)
        );
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    /// The client's private key.
    pub fn key(&self) -> PathBuf {
        self.dir.join("client_ed25519")
    }

    /// The known_hosts file that holds this sshd's host key (and only it).
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// The command prefix a user puts in `--via`: `ssh OPTIONS
    /// root@127.0.0.1`, one shell word per option (no word needs quoting);
    /// the remote command follows it.
    pub fn ssh_command(&self) -> String {
        self.ssh_args().join(" ")
    }

    /// `ssh_command()` as separate arguments (program first).
    pub fn ssh_args(&self) -> Vec<String> {
        vec![
            SSH.to_string(),
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            self.key().display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts().display()),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "-o".into(),
            "ConnectTimeout=5".into(),
            "root@127.0.0.1".into(),
        ]
    }

    /// `ssh ... root@127.0.0.1 REMOTE` (REMOTE is one string, run by the
    /// remote shell), ready for stdin/stdout to be set.
    pub fn ssh(&self, remote: &str) -> Command {
        let args = self.ssh_args();
        let mut cmd = Command::new(&args[0]);
        cmd.args(&args[1..]).arg(remote);
        cmd
    }

    /// Runs `ssh ... REMOTE` with stdin from /dev/null and returns what
    /// happened.
    pub fn ssh_output(&self, remote: &str) -> Output {
        self.ssh(remote).stdin(Stdio::null()).output().unwrap()
    }

    /// The ssh host key, host side, and the client key pair, with the
    /// authorized_keys and known_hosts that go with them.
    fn make_keys(&self) {
        for (key, comment) in [
            ("host_ed25519", "volmig-e2e-host"),
            ("client_ed25519", "volmig-e2e-client"),
        ] {
            let out = Command::new(SSH_KEYGEN)
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(self.dir.join(key))
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("e2e: cannot run {SSH_KEYGEN}: {e}"));
            assert!(
                out.status.success(),
                "ssh-keygen -f {key} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        fs::copy(
            self.dir.join("client_ed25519.pub"),
            self.dir.join("authorized_keys"),
        )
        .unwrap();
        fs::set_permissions(
            self.dir.join("authorized_keys"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }

    fn write_config(&self) {
        let d = self.dir.display();
        let config = format!(
            "# volmig e2e: a private sshd (tests/e2e/sshd.rs)\n\
             Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {d}/host_ed25519\n\
             PidFile {d}/pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             AuthorizedPrincipalsFile none\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             HostbasedAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             PermitUserEnvironment no\n\
             SetEnv PATH={SESSION_PATH}\n\
             X11Forwarding no\n\
             AllowAgentForwarding no\n\
             AllowTcpForwarding no\n\
             PermitTunnel no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             UseDNS no\n\
             LogLevel INFO\n\
             MaxStartups 100:30:200\n",
            port = self.port
        );
        fs::write(self.dir.join("sshd_config"), config).unwrap();
        let host_pub = fs::read_to_string(self.dir.join("host_ed25519.pub")).unwrap();
        fs::write(
            self.known_hosts(),
            format!("[127.0.0.1]:{} {}", self.port, host_pub.trim_end()) + "\n",
        )
        .unwrap();
    }

    /// Starts sshd on `self.port` and waits for a login; `Err` when it
    /// exits first or does not accept one in time (it is stopped then).
    fn try_start(&mut self) -> Result<(), StartFailure> {
        assert!(self.child.is_none(), "sshd {} already runs", self.name);
        self.write_config();
        let log_path = self.log_path();
        let log = fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(SSHD);
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // If this test process dies, the sshd gets SIGTERM.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("e2e: a private sshd cannot be had: cannot run {SSHD}: {e}")
        });
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let t0 = Instant::now();
        let mut listening = false;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(StartFailure {
                    exit_code: status.code(),
                    log: fs::read_to_string(&log_path).unwrap_or_default(),
                });
            }
            // A bare connect until the port accepts (cheaper than an ssh
            // run), then logins only.
            listening =
                listening || TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok();
            if listening {
                let login = self.ssh_output("true");
                if login.status.success() {
                    println!(
                        "e2e: sshd {} up on 127.0.0.1:{} in {:.1}s",
                        self.name,
                        self.port,
                        t0.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
                if t0.elapsed() > START_TIMEOUT {
                    let log = format!(
                        "{}\n(last login attempt: {}; ssh stderr: {})",
                        fs::read_to_string(&log_path).unwrap_or_default(),
                        login.status,
                        String::from_utf8_lossy(&login.stderr).trim_end()
                    );
                    self.stop();
                    return Err(StartFailure {
                        exit_code: None,
                        log,
                    });
                }
            } else if t0.elapsed() > START_TIMEOUT {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                self.stop();
                return Err(StartFailure {
                    exit_code: None,
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM to the sshd this harness started (its listener: sessions
    /// still open are its children and end with their connection), SIGKILL
    /// after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        if alive(pid) {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let t0 = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if t0.elapsed() > STOP_TIMEOUT => {
                    eprintln!(
                        "e2e: sshd {} ({pid}) ignored SIGTERM for {}s: SIGKILL",
                        self.name,
                        STOP_TIMEOUT.as_secs()
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for LocalSshd {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("VOLMIG_E2E_KEEP").is_some() {
            eprintln!("e2e: VOLMIG_E2E_KEEP: leaving {}", self.dir.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A port of 127.0.0.1 no one listens on right now (the kernel's choice).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// sshd refuses to start without its privilege separation directory.
fn make_privsep_dir() {
    let dir = Path::new(PRIVSEP_DIR);
    if dir.is_dir() {
        return;
    }
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap(),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            panic!("e2e: cannot create {PRIVSEP_DIR} (sshd's privilege separation directory): {e}")
        }
    }
}
