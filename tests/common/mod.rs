//! `FakeDataRoot`: builds a data-root in a tempdir the way dockerd lays it
//! out (containers with config.v2.json/hostconfig.json, volumes with _data,
//! opts.json and metadata.db records), for the cases real fixtures cannot
//! hold. Plus `volmig()`, the binary under test.

pub mod pty;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::{json, Value};
use volmig::dataroot::metadata::{write_records, VolumeRecord};

pub struct FakeDataRoot {
    pub dir: tempfile::TempDir,
    records: Vec<VolumeRecord>,
}

/// A mount point as dockerd writes it into config.v2.json.
pub fn volume_mount(name: &str, destination: &str, root: &Path) -> Value {
    json!({
        "Source": root.join("volumes").join(name).join("_data"),
        "Destination": destination,
        "RW": true,
        "Name": name,
        "Driver": "local",
        "Type": "volume",
        "Relabel": "z",
        "ID": "0123",
        "Spec": {},
        "SkipMountpointCreation": false
    })
}

pub fn bind_mount(source: &str, destination: &str) -> Value {
    json!({
        "Source": source,
        "Destination": destination,
        "RW": true,
        "Name": "",
        "Driver": "",
        "Type": "bind",
        "Propagation": "rprivate",
        "Spec": {"Type": "bind", "Source": source, "Target": destination},
        "SkipMountpointCreation": false
    })
}

impl FakeDataRoot {
    pub fn new() -> FakeDataRoot {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("volumes")).unwrap();
        fs::create_dir_all(dir.path().join("containers")).unwrap();
        FakeDataRoot {
            dir,
            records: Vec::new(),
        }
    }

    pub fn path(&self) -> PathBuf {
        fs::canonicalize(self.dir.path()).unwrap()
    }

    /// A plain local volume with `_data` and a metadata.db record.
    pub fn volume(&mut self, name: &str, labels: &[(&str, &str)]) -> &mut Self {
        fs::create_dir_all(self.path().join("volumes").join(name).join("_data")).unwrap();
        self.record(name, "local", labels)
    }

    pub fn record(&mut self, name: &str, driver: &str, labels: &[(&str, &str)]) -> &mut Self {
        self.records.push(VolumeRecord {
            name: name.into(),
            driver: driver.into(),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            options: None,
        });
        self
    }

    pub fn opts_json(&mut self, name: &str, text: &str) -> &mut Self {
        let dir = self.path().join("volumes").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("opts.json"), text).unwrap();
        self
    }

    /// A container with the given mount points (destination -> mount point).
    pub fn container(&mut self, id: &str, name: &str, mounts: &[Value]) -> &mut Self {
        self.container_with(id, name, mounts, json!({}))
    }

    pub fn container_with(
        &mut self,
        id: &str,
        name: &str,
        mounts: &[Value],
        host_config: Value,
    ) -> &mut Self {
        let root = self.path();
        let dir = root.join("containers").join(id);
        fs::create_dir_all(&dir).unwrap();
        let mount_points: BTreeMap<String, Value> = mounts
            .iter()
            .map(|m| (m["Destination"].as_str().unwrap().to_string(), m.clone()))
            .collect();
        let config = json!({
            "ID": id,
            "Name": format!("/{name}"),
            "State": {"Running": false},
            "MountPoints": mount_points,
            "HostnamePath": dir.join("hostname"),
            "HostsPath": dir.join("hosts"),
            "ResolvConfPath": dir.join("resolv.conf"),
        });
        fs::write(
            dir.join("config.v2.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        fs::write(
            dir.join("hostconfig.json"),
            serde_json::to_vec(&host_config).unwrap(),
        )
        .unwrap();
        self
    }

    /// Writes metadata.db with every record added so far.
    pub fn write_db(&mut self) -> &mut Self {
        write_records(&self.path().join("volumes/metadata.db"), &self.records).unwrap();
        self
    }

    pub fn volmig(&self) -> Command {
        let mut cmd = volmig();
        cmd.arg("--data-root").arg(self.path());
        cmd
    }
}

/// The binary under test, predicting `current` unless a test says
/// otherwise: no data-root from the environment, and no installed dockerd
/// (`VOLMIG_DOCKERD` empty; a test that wants one sets it).
pub fn volmig() -> Command {
    let mut cmd = Command::cargo_bin("volmig").unwrap();
    cmd.env_remove("VOLMIG_DATA_ROOT").env("VOLMIG_DOCKERD", "");
    cmd
}

/// Runs `volmig --json ARGS` and returns the exit code and the document.
pub fn json_run(cmd: &mut Command) -> (i32, Value) {
    let out = cmd.arg("--json").output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), doc)
}

/// Every finding message of a verify document's container `name`, with its kind.
pub fn container_findings(doc: &Value, name: &str) -> Vec<(String, String)> {
    let c = doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {doc:#}"));
    let mut out = Vec::new();
    for f in c["findings"].as_array().unwrap() {
        out.push((
            f["kind"].as_str().unwrap().to_string(),
            f["message"].as_str().unwrap().to_string(),
        ));
    }
    for m in c["mounts"].as_array().unwrap() {
        for f in m["findings"].as_array().unwrap() {
            out.push((
                f["kind"].as_str().unwrap().to_string(),
                f["message"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// The directory of a shipped fixture.
pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A recorded daemon output of a fixture (`docker-outputs/<file>`).
pub fn recorded(name: &str, file: &str) -> String {
    fs::read_to_string(fixture_dir(name).join("docker-outputs").join(file)).unwrap()
}

/// Copies the data-root of fixture `name` into a tempdir and restores what
/// git cannot hold, from `docker-outputs/tree.txt`: empty directories
/// (`_data` of a tmpfs volume, `checkpoints/`), modes and owners.
pub fn fixture(name: &str) -> tempfile::TempDir {
    let src = fixture_dir(name);
    let dst = tempfile::tempdir().unwrap();
    for entry in walkdir::WalkDir::new(&src).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str();
        if top == "README.md" || top == "docker-outputs" {
            continue;
        }
        let target = dst.path().join(rel);
        if entry.file_type().is_dir() {
            fs::create_dir_all(&target).unwrap();
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
    let tree = recorded(name, "tree.txt");
    for line in tree.lines() {
        let mut parts = line.splitn(5, ' ');
        let (kind, mode, owner, _size, path) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let target = dst.path().join(path);
        if kind == "d" {
            fs::create_dir_all(&target).unwrap();
        }
        let (uid, gid) = owner.split_once(':').unwrap();
        std::os::unix::fs::lchown(
            &target,
            Some(uid.parse().unwrap()),
            Some(gid.parse().unwrap()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(
            &target,
            fs::Permissions::from_mode(u32::from_str_radix(mode, 8).unwrap()),
        )
        .unwrap();
    }
    dst
}

/// Container name -> full ID, from the fixture's `containers.tsv`.
pub fn fixture_ids(name: &str) -> BTreeMap<String, String> {
    recorded(name, "containers.tsv")
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, id)| (n.to_string(), id.to_string()))
        .collect()
}

/// The `Error response from daemon: ...` texts of a recorded `docker start`.
pub fn daemon_errors(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("Error response from daemon: "))
        .map(str::to_string)
        .collect()
}

/// The failure messages verify reports for container `name`.
pub fn failure_messages(doc: &Value, name: &str) -> std::collections::BTreeSet<String> {
    let c = doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"));
    let mut out = std::collections::BTreeSet::new();
    let mut take = |f: &Value| {
        if f["severity"] == "error" || f["severity"] == "fatal" {
            out.insert(f["message"].as_str().unwrap().to_string());
        }
    };
    c["findings"].as_array().unwrap().iter().for_each(&mut take);
    for m in c["mounts"].as_array().unwrap() {
        m["findings"].as_array().unwrap().iter().for_each(&mut take);
    }
    out
}
