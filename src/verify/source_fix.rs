//! The fix for a stale volume `Source` (a data-root moved to another path,
//! read by 20.10.3-25.x for a z/Z mount): a command that works in the state
//! the daemon is in.
//!
//! A running dockerd keeps every container's mount points in memory and
//! writes them back to config.v2.json whenever it saves the container: a
//! Source rewritten under it is undone, and its own start keeps failing on
//! the old path. So with the daemon running the fix is stop, rewrite,
//! start; with it stopped, rewrite before it starts. `volmig import` points
//! Sources at the new root only when it commits with the daemon stopped.

use std::path::Path;

use super::{VerifyOptions, World};
use crate::dataroot::containers::Container;
use crate::dataroot::DataRoot;
use crate::report::{Finding, FindingKind, Severity};

/// The finding kinds whose fix this writes.
const KINDS: &[FindingKind] = &[FindingKind::StaleSourceRelabel, FindingKind::StaleSource];

/// Whether a daemon runs on this data-root: one answered (the caller
/// says), or one holds metadata.db (the scan saw its lock).
pub fn daemon_running(world: &World, opts: &VerifyOptions) -> bool {
    opts.daemon_running
        || world
            .scan
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::DaemonRunning)
}

/// Rewrites the fix of each stale-Source finding of `findings` (found at
/// a mount whose recomputed path is `data`) for this container and state.
pub fn set_fixes(
    world: &World,
    container: &Container,
    opts: &VerifyOptions,
    data: &str,
    findings: &mut [Finding],
) {
    let running = daemon_running(world, opts);
    let who = if container.name.is_empty() {
        container.id.as_str()
    } else {
        container.name.as_str()
    };
    let command = rewrite_command(world.root, &[who]);
    for f in findings.iter_mut().filter(|f| KINDS.contains(&f.kind)) {
        f.fix = fix_text(&command, data, running, f.severity);
    }
}

/// `volmig --data-root R [--userns-remap U:G] rewrite-sources NAME...`.
pub fn rewrite_command(root: &DataRoot, containers: &[&str]) -> String {
    let mut cmd = format!("volmig --data-root {}", shell_word(root.given()));
    if let Some(remap) = root.remap() {
        cmd.push_str(&format!(" --userns-remap {remap}"));
    }
    cmd.push_str(" rewrite-sources");
    for c in containers {
        cmd.push(' ');
        cmd.push_str(&shell_word(Path::new(c)));
    }
    cmd
}

fn fix_text(command: &str, data: &str, running: bool, severity: Severity) -> String {
    let what = format!("points the stored Source at `{data}`");
    match (running, severity) {
        (true, Severity::Info) => format!(
            "if this data-root may meet dockerd 20.10.3-25.x: stop dockerd (systemctl stop docker), run `{command}` ({what}), start it"
        ),
        (true, _) => format!(
            "dockerd keeps the old Source in memory and writes it back: stop it (systemctl stop docker), run `{command}` ({what}), then start it (systemctl start docker)"
        ),
        (false, Severity::Info) => format!(
            "if this data-root may meet dockerd 20.10.3-25.x: run `{command}` ({what}) before starting dockerd"
        ),
        (false, _) => format!("run `{command}` ({what}) before starting dockerd"),
    }
}

/// A path as one shell word: quoted when it holds anything but
/// `[A-Za-z0-9/._-]`.
fn shell_word(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:".contains(c));
    if plain {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_names_a_command_for_the_daemons_state() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::open(dir.path(), None).unwrap();
        let cmd = rewrite_command(&root, &["web"]);
        assert!(cmd.ends_with(" rewrite-sources web"), "{cmd}");
        let running = fix_text(&cmd, "/d", true, Severity::Error);
        assert!(
            running.starts_with("dockerd keeps the old Source in memory"),
            "{running}"
        );
        assert!(
            running.contains("systemctl stop docker") && running.contains("systemctl start docker")
        );
        let stopped = fix_text(&cmd, "/d", false, Severity::Error);
        assert!(stopped.starts_with("run `volmig --data-root"), "{stopped}");
        assert!(!stopped.contains("volmig import does"));
    }

    #[test]
    fn odd_paths_are_quoted_for_the_shell() {
        assert_eq!(shell_word(Path::new("/var/lib/docker")), "/var/lib/docker");
        assert_eq!(shell_word(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
