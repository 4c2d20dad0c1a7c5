//! volmig as a docker CLI plugin: the metadata the CLI asks for and the
//! placing of the binary as `docker-volmig` in a cli-plugins directory.
//!
//! The docker CLI (20.10 and 28.x alike) finds `docker-<name>` executables
//! in `$DOCKER_CONFIG/cli-plugins` (default `~/.docker/cli-plugins`) and in
//! system directories such as `/usr/local/lib/docker/cli-plugins`, runs
//! each with `docker-cli-plugin-metadata` to list it, and runs
//! `docker [global options] volmig ARGS` as `docker-volmig [global
//! options] volmig ARGS`. Parsing that command line is the CLI's business
//! (`cli::plugin`); this module never prints.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The plugin's name: `docker volmig`, the executable `docker-volmig`.
pub const PLUGIN_NAME: &str = "volmig";
/// The executable's file name in a cli-plugins directory.
pub const PLUGIN_FILE: &str = "docker-volmig";
/// Where a plugin for every user goes (the docker CLI looks there on
/// Linux; Debian's docker.io also reads /usr/libexec/docker/cli-plugins).
pub const SYSTEM_PLUGIN_DIR: &str = "/usr/local/lib/docker/cli-plugins";
/// The only schema version the docker CLI accepts (20.10 to 28.x).
const SCHEMA_VERSION: &str = "0.1.0";

/// What `docker-volmig docker-cli-plugin-metadata` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metadata {
    pub schema_version: &'static str,
    pub vendor: &'static str,
    pub version: &'static str,
    pub short_description: &'static str,
}

impl Metadata {
    pub fn new(version: &'static str) -> Metadata {
        Metadata {
            schema_version: SCHEMA_VERSION,
            vendor: "volmig",
            version,
            short_description: "Carry volumes between data-roots; predict what dockerd will do",
        }
    }
}

/// How the plugin is put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallMode {
    /// A symlink to this binary: a rebuilt or upgraded volmig is the plugin.
    Symlink,
    /// A copy: the plugin stays when this binary is moved or removed.
    Copy,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot create the plugin directory `{}`: {source}: create it, or pass another with --dir", dir.display())]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("cannot write `{}`: {source}: check the permissions of `{}` (for --system, run as root)", path.display(), dir.display())]
    Write {
        path: PathBuf,
        dir: PathBuf,
        source: io::Error,
    },
    #[error("`{}` is a directory: remove it, then run install-plugin again", path.display())]
    IsDirectory { path: PathBuf },
}

/// The per-user plugin directory: `<docker config dir>/cli-plugins`.
pub fn user_plugin_dir(config_dir: &Path) -> PathBuf {
    config_dir.join("cli-plugins")
}

/// Puts `exe` in place as `<dir>/docker-volmig`, replacing what is there
/// in one rename (a docker CLI listing plugins meanwhile sees the old one
/// or the new one, never half a copy). Returns the plugin's path.
pub fn install(exe: &Path, dir: &Path, mode: InstallMode) -> Result<PathBuf, InstallError> {
    std::fs::create_dir_all(dir).map_err(|source| InstallError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let target = dir.join(PLUGIN_FILE);
    if target.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        return Err(InstallError::IsDirectory { path: target });
    }
    // Installing the installed copy onto itself: a symlink would point at
    // itself, a copy would read what it truncates.
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(exe, &target) && target.symlink_metadata().is_ok_and(|m| m.is_file()) {
        return Ok(target);
    }
    let temp = dir.join(format!(".{PLUGIN_FILE}.tmp-{}", std::process::id()));
    let write_err = |path: &Path, source: io::Error| InstallError::Write {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(&temp);
    let made = match mode {
        InstallMode::Symlink => std::os::unix::fs::symlink(exe, &temp),
        InstallMode::Copy => copy_executable(exe, &temp),
    };
    if let Err(e) = made.and_then(|()| std::fs::rename(&temp, &target)) {
        let _ = std::fs::remove_file(&temp);
        return Err(write_err(&target, e));
    }
    Ok(target)
}

fn copy_executable(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    std::fs::File::open(to)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_what_the_docker_cli_accepts() {
        let doc = serde_json::to_value(Metadata::new("1.2.3 (abc)")).unwrap();
        assert_eq!(doc["SchemaVersion"], "0.1.0");
        assert_eq!(doc["Vendor"], "volmig");
        assert_eq!(doc["Version"], "1.2.3 (abc)");
        assert!(doc["ShortDescription"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    }

    #[test]
    fn install_links_then_replaces_with_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("volmig");
        std::fs::write(&exe, b"#!/bin/sh\n").unwrap();
        let plugins = dir.path().join("cfg/cli-plugins");
        let got = install(&exe, &plugins, InstallMode::Symlink).unwrap();
        assert_eq!(got, plugins.join("docker-volmig"));
        assert_eq!(std::fs::read_link(&got).unwrap(), exe);
        let got = install(&exe, &plugins, InstallMode::Copy).unwrap();
        assert!(got.symlink_metadata().unwrap().is_file());
        assert_eq!(std::fs::read(&got).unwrap(), b"#!/bin/sh\n");
        // Again, from the installed copy itself: left as it is.
        install(&got, &plugins, InstallMode::Symlink).unwrap();
        assert!(got.symlink_metadata().unwrap().is_file());
        let names: Vec<_> = std::fs::read_dir(&plugins).unwrap().collect();
        assert_eq!(names.len(), 1, "temp files left: {names:?}");
    }

    #[test]
    fn a_directory_in_the_way_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("docker-volmig")).unwrap();
        let err = install(Path::new("/bin/true"), dir.path(), InstallMode::Copy).unwrap_err();
        assert!(
            err.to_string().contains("docker-volmig` is a directory"),
            "{err}"
        );
    }
}
