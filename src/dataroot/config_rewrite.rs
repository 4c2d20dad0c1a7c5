//! Writes: points a container's stored volume `Source` paths at this
//! data-root, in its `config.v2.json`.
//!
//! dockerd recomputes a local volume's path, except 20.10.3 to 25.x with a
//! z/Z mode (the default for `-v name:/p`), which evaluate the stored
//! Source: after a move to another data-root path those fail with
//! `error evaluating symlinks from mount source`. The file is replaced
//! atomically (temp file, fsync, rename, fsync of the directory), keeping
//! its mode; the rewrite is idempotent, so a recovery may run it again.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::containers::Container;
use super::DataRoot;

/// Largest config.v2.json rewritten (dockerd's are a few KiB; a container
/// with thousands of mounts stays well below).
pub const MAX_CONFIG: u64 = 16 << 20;

/// The temp file beside the config. dockerd never writes this name, and
/// the caller holds volmig's import lock: one that exists is a leftover of
/// a killed rewrite, and is replaced.
const TMP_NAME: &str = "config.v2.json.volmig-tmp";

/// Rewrites the Source of each local volume mount named in `volumes` to
/// `<R>/volumes/<name>/_data`. `Ok(false)` when nothing needed changing or
/// the file is absent.
pub fn point_sources_at(root: &DataRoot, path: &Path, volumes: &[&str]) -> io::Result<bool> {
    let file = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        other => other?,
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_CONFIG {
        return Err(io::Error::other(format!(
            "{} bytes is larger than the {MAX_CONFIG} bytes volmig edits",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG + 1).read_to_end(&mut bytes)?;
    let mut config: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| io::Error::other(format!("not valid JSON: {e}")))?;
    let mut changed = false;
    if let Some(mounts) = config
        .get_mut("MountPoints")
        .and_then(|m| m.as_object_mut())
    {
        for mount in mounts.values_mut() {
            let name = mount.get("Name").and_then(|n| n.as_str()).unwrap_or("");
            let local = mount.get("Driver").and_then(|d| d.as_str()) == Some("local");
            if name.is_empty() || !local || !volumes.contains(&name) {
                continue;
            }
            let want = root.volume_data_dir(name).display().to_string();
            let source = mount.get("Source").and_then(|s| s.as_str()).unwrap_or("");
            if !source.is_empty() && source != want {
                mount["Source"] = serde_json::Value::String(want);
                changed = true;
            }
        }
    }
    if !changed {
        return Ok(false);
    }
    let json = serde_json::to_vec(&config).map_err(io::Error::other)?;
    crate::atomic_file::replace(path, TMP_NAME, &json, meta.permissions().mode())?;
    Ok(true)
}

/// Points every local volume Source of `container` at this data-root
/// (`volmig rewrite-sources`). The caller makes sure no dockerd runs on
/// the data-root (it would write its own copy back) and holds volmig's
/// import lock.
pub fn point_container_sources_at(root: &DataRoot, container: &Container) -> io::Result<bool> {
    let names: Vec<&str> = container
        .mount_points()
        .filter(|(_, m)| m.driver == "local" && !m.name.is_empty())
        .map(|(_, m)| m.name.as_str())
        .collect();
    if names.is_empty() {
        return Ok(false);
    }
    point_sources_at(root, &container.config_path(), &names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_leftover_temp_file_of_a_killed_rewrite_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::open(dir.path(), None).unwrap();
        let config = dir.path().join("config.v2.json");
        fs::write(
            &config,
            br#"{"MountPoints":{"/d":{"Name":"v","Driver":"local","Source":"/old/volumes/v/_data"}}}"#,
        )
        .unwrap();
        fs::write(config.with_file_name(TMP_NAME), b"half written").unwrap();
        assert!(point_sources_at(&root, &config, &["v"]).unwrap());
        let text = fs::read_to_string(&config).unwrap();
        assert!(
            text.contains(&root.volume_data_dir("v").display().to_string()),
            "{text}"
        );
        assert!(!config.with_file_name(TMP_NAME).exists());
        // Idempotent: a second run changes nothing.
        assert!(!point_sources_at(&root, &config, &["v"]).unwrap());
    }

    #[test]
    fn a_fifo_as_config_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let root = DataRoot::open(dir.path(), None).unwrap();
        let config = dir.path().join("config.v2.json");
        nix::unistd::mkfifo(&config, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(point_sources_at(&root, &config, &["v"]).is_err());
    }
}
