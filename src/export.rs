//! `export`: snapshot containers' mount points and the volumes they
//! reference into one bundle.
//!
//! Planning reads the source data-root and refuses, before writing a byte,
//! anything that would make a bundle that cannot be imported faithfully:
//! a running container (its data is changing), a volume already missing,
//! a volume of a plugin driver (its data is not here), an opts.json dockerd
//! could not parse, a checkpoint that is not there.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::bundle::layout::{self, VolumeData};
use crate::bundle::writer::{BundleWriter, Compression, WriteError};
use crate::bundle::{
    hex, BundleContainer, BundleDevice, BundleHeader, BundleMount, BundleVolume, DataAttrs,
    Trailer, FORMAT,
};
use crate::dataroot::containers::{self, Container, ContainerSlot, MountKind};
use crate::dataroot::device::DataLocation;
use crate::dataroot::metadata::{self, MetadataError, VolumeStore};
use crate::dataroot::opts::VolumeOptions;
use crate::dataroot::volumes::VolumeName;
use crate::dataroot::DataRoot;
use crate::engine::{Engine, RunState};
use crate::fileattrs::FileAttrs;
use crate::idmap::{Direction, IdError, IdShift, ShiftNote};
use crate::manifest::ManifestWriter;
use crate::progress::Progress;

#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Container references: ID, ID prefix or name.
    pub containers: Vec<String>,
    /// Carry `containers/<id>/checkpoints/<name>/`.
    pub checkpoint: Option<String>,
    /// Export containers whose State.Running is true anyway.
    pub allow_running: bool,
    /// The caller paused the containers for the export: paused is quiet.
    pub paused_is_quiet: bool,
    /// What to do with the host directory of a bind-type volume.
    pub bind_data: BindData,
}

/// The data of a bind-type volume (`type=none o=bind device=/srv/x`): it
/// lives at the device path, not in `_data`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BindData {
    /// Carry the device path's tree as the volume's data.
    #[default]
    Carry,
    /// Carry only the options; the data stays behind (and export says so).
    Skip,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Every reason the export cannot start, one per line.
    #[error("{}", .0.join("\n"))]
    Refused(Vec<String>),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("cannot read `{path}`: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("`{path}`: {source}")]
    Ids { path: PathBuf, source: IdError },
}

/// What will be written: the header and where each part comes from.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub header: BundleHeader,
    containers: Vec<Container>,
    /// Volume name -> whether it has an opts.json.
    volumes: BTreeMap<String, bool>,
}

impl ExportPlan {
    /// The device of a volume whose data is not in `_data`.
    pub fn device(&self, name: &str) -> Option<&BundleDevice> {
        self.header
            .volumes
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.device.as_deref())
    }

    /// Volumes whose data the bundle does not hold, each with why.
    pub fn data_left_behind(&self) -> Vec<String> {
        self.header
            .volumes
            .iter()
            .filter_map(|v| {
                let d = v.device.as_ref().filter(|d| !d.data_carried)?;
                Some(match d.location.as_str() {
                    "bind" => format!(
                        "volume `{}`: its data at `{}` stayed behind (--bind-data skip); only its options are in the bundle",
                        v.name, d.device
                    ),
                    "tmpfs" => format!("volume `{}` is a tmpfs: it holds no data to carry; its options are in the bundle", v.name),
                    _ => format!(
                        "volume `{}`: its data is on `{}` ({}), not in this data-root, and is not in the bundle; its options and `_data` as it is on disk are",
                        v.name, d.device, d.location
                    ),
                })
            })
            .collect()
    }

    /// Bytes of file content to carry, as the writer counts them (a walk of
    /// everything `write` adds; for the progress bar's total).
    pub fn content_bytes(&self, root: &DataRoot) -> u64 {
        // By descriptors, as the writer walks: a directory a container
        // swaps for a symlink meanwhile is not followed even to count.
        let files_under = |dir: PathBuf| -> u64 { crate::bundle::writer::file_bytes(&dir) };
        let containers: u64 = self
            .containers
            .iter()
            .map(|c| {
                let checkpoint = self
                    .header
                    .containers
                    .iter()
                    .find(|b| b.id == c.id)
                    .and_then(|b| b.checkpoint.as_ref())
                    .map_or(0, |cp| files_under(root.checkpoint_dir(&c.id, cp)));
                let configs: u64 = crate::dataroot::CONTAINER_FILES
                    .iter()
                    .filter_map(|f| std::fs::metadata(root.container_file(&c.id, f)).ok())
                    .map(|m| m.len())
                    .sum();
                checkpoint + configs
            })
            .sum();
        let volumes: u64 = self
            .volumes
            .keys()
            .map(|name| match self.device(name) {
                Some(d) if d.data_carried => files_under(PathBuf::from(&d.device)),
                Some(d) if d.location == "bind" => 0,
                _ => files_under(root.volume_dir(name)),
            })
            .sum();
        containers + volumes
    }
}

/// Resolves the containers and their volumes; lists every refusal at once.
///
/// `engine` is the daemon serving this data-root, if one runs: it then
/// tells the containers' real state (config.v2.json lags behind a running
/// daemon) and the volumes' labels (it holds metadata.db locked).
pub fn plan(
    root: &DataRoot,
    opts: &ExportOptions,
    engine: Option<&dyn Engine>,
) -> Result<ExportPlan, ExportError> {
    let slots = containers::load_all(root).map_err(|source| ExportError::Read {
        path: root.containers_dir(),
        source,
    })?;
    let mut refusals = Vec::new();
    let mut chosen: Vec<&ContainerSlot> = Vec::new();
    for query in &opts.containers {
        match containers::find(&slots, query) {
            Ok(slot) if chosen.iter().any(|c| c.id == slot.id) => {}
            Ok(slot) => chosen.push(slot),
            Err(e) => refusals.push(e.to_string()),
        }
    }
    let mut store = match metadata::read_store(&root.metadata_db()) {
        Ok(store) => store.unwrap_or_default(),
        Err(MetadataError::Locked { .. }) if engine.is_some() => VolumeStore::default(),
        Err(MetadataError::Locked { path }) => {
            refusals.push(format!(
                "`{}` is locked: a dockerd is running on this data-root; stop it (systemctl stop docker) so the volumes and their labels can be read consistently",
                path.display()
            ));
            VolumeStore::default()
        }
        Err(e) => {
            refusals.push(format!("{e}: the volumes' labels cannot be read"));
            VolumeStore::default()
        }
    };

    let mut containers = Vec::new();
    let mut volumes: BTreeMap<String, bool> = BTreeMap::new();
    let mut bundle_containers = Vec::new();
    for slot in chosen {
        let c = match &slot.loaded {
            Ok(c) => c,
            Err(e) => {
                refusals.push(format!("{e}: repair it before exporting"));
                continue;
            }
        };
        let state = &c.config.state;
        let running = match engine.map(|e| e.container_state(&c.id)) {
            Some(Ok(RunState::Stopped)) => false,
            Some(Ok(RunState::Paused)) => !opts.paused_is_quiet,
            Some(Ok(RunState::Running)) => true,
            Some(Err(e)) => {
                refusals.push(format!("container {}: {e}", c.name));
                false
            }
            None => state.running || state.paused || state.restarting,
        };
        if running && !opts.allow_running {
            refusals.push(format!(
                "container {} is running: its data is changing; stop it first (docker stop {}), or pass --allow-running to export it anyway",
                c.name, c.name
            ));
        }
        let mut mounts = Vec::new();
        for (destination, m) in c.mount_points() {
            let kind = m.mount_kind();
            mounts.push(BundleMount {
                destination: destination.clone(),
                kind: match kind {
                    MountKind::Bind => "bind".into(),
                    MountKind::Volume => "volume".into(),
                    MountKind::Tmpfs => "tmpfs".into(),
                    MountKind::Other => m.kind.clone(),
                },
                name: m.name.clone(),
                source: m.source.clone(),
                rw: m.rw,
            });
            if kind != MountKind::Volume || m.driver.is_empty() || volumes.contains_key(&m.name) {
                continue;
            }
            if let Some(e) = engine.filter(|_| !store.records.contains_key(&m.name)) {
                // The daemon holds metadata.db: ask it for the record.
                match e.volume(&m.name) {
                    Ok(Some(record)) => {
                        store.records.insert(m.name.clone(), record);
                    }
                    Ok(None) => {}
                    Err(err) => refusals.push(format!("volume `{}`: {err}", m.name)),
                }
            }
            if let Some(reason) = volume_refusal(root, &store, &c.name, &m.name, &m.driver) {
                refusals.push(reason);
                continue;
            }
            volumes.insert(m.name.clone(), root.volume_opts(&m.name).exists());
        }
        if let Some(cp) = &opts.checkpoint {
            if !crate::dataroot::is_restricted_name(cp) {
                refusals.push(format!(
                    "invalid checkpoint name `{cp}`: dockerd accepts only [a-zA-Z0-9][a-zA-Z0-9_.-]+ (list them with `docker checkpoint ls {}`)",
                    c.name
                ));
            } else if !root.checkpoint_dir(&c.id, cp).is_dir() {
                refusals.push(format!(
                    "container {} has no checkpoint `{cp}` (`{}`): list them with `docker checkpoint ls {}`",
                    c.name,
                    root.checkpoint_dir(&c.id, cp).display(),
                    c.name
                ));
            }
        }
        bundle_containers.push(BundleContainer {
            id: c.id.clone(),
            name: c.name.clone(),
            mounts,
            checkpoint: opts.checkpoint.clone(),
        });
        containers.push(c.clone());
    }
    if !refusals.is_empty() {
        return Err(ExportError::Refused(refusals));
    }

    let mut bundle_volumes = Vec::new();
    for (name, has_opts) in &volumes {
        match bundle_volume(root, &store, name, *has_opts, opts.bind_data) {
            Ok(v) => bundle_volumes.push(v),
            Err(ExportError::Refused(r)) => refusals.extend(r),
            Err(e) => return Err(e),
        }
    }
    if !refusals.is_empty() {
        return Err(ExportError::Refused(refusals));
    }
    bundle_containers.sort_by(|a, b| a.id.cmp(&b.id));
    containers.sort_by(|a, b| a.id.cmp(&b.id));
    let header = BundleHeader {
        format: FORMAT.into(),
        tool: format!("volmig {}", env!("CARGO_PKG_VERSION")),
        source_host: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source_data_root: root.path().display().to_string(),
        containers: bundle_containers,
        volumes: bundle_volumes,
        userns: root.id_map().map(ShiftNote::of),
        round: None,
    };
    Ok(ExportPlan {
        header,
        containers,
        volumes,
    })
}

/// One volume's header entry: its record, options, where its data is and
/// the attributes of the directory carried as `_data`.
fn bundle_volume(
    root: &DataRoot,
    store: &VolumeStore,
    name: &str,
    has_opts: bool,
    bind_data: BindData,
) -> Result<BundleVolume, ExportError> {
    let options = match has_opts {
        true => std::fs::read(root.volume_opts(name))
            .ok()
            .and_then(|b| VolumeOptions::decode(&b).ok()),
        false => None,
    };
    let location = DataLocation::of(options.as_ref());
    let device = options
        .as_ref()
        .filter(|_| location.is_elsewhere())
        .map(|o| {
            Box::new(BundleDevice {
                location: location.word().into(),
                device: o.mount_device.clone(),
                data_carried: matches!(location, DataLocation::Bind { .. })
                    && bind_data == BindData::Carry,
            })
        });
    let data_dir = match (&location, &device) {
        (DataLocation::Bind { device: path }, Some(d)) if d.data_carried => {
            if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                return Err(ExportError::Refused(vec![format!(
                    "volume `{name}` is a bind of `{}`, which is not a directory on this host: there is no data to carry; re-run with --bind-data skip to carry its options only",
                    path.display()
                )]));
            }
            path.clone()
        }
        _ => root.volume_data_dir(name),
    };
    let mut attrs = FileAttrs::read(&data_dir).map_err(|source| ExportError::Read {
        path: data_dir.clone(),
        source,
    })?;
    if let Some(ids) = id_shift(root) {
        ids.apply(&mut attrs.uid, &mut attrs.gid, &mut attrs.xattrs)
            .map_err(|source| ExportError::Ids {
                path: data_dir.clone(),
                source,
            })?;
    }
    Ok(BundleVolume {
        name: name.to_string(),
        anonymous: VolumeName::new(name).is_ok_and(|n| n.is_anonymous()),
        record: store.records.get(name).cloned(),
        opts_json: has_opts,
        data: DataAttrs {
            uid: attrs.uid,
            gid: attrs.gid,
            mode: format!("{:04o}", attrs.mode),
            mtime: attrs.mtime,
            mtime_nsec: attrs.mtime_nsec,
            xattrs: attrs
                .xattrs
                .iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), hex(v)))
                .collect(),
        },
        device,
    })
}

/// A remapped source's ids go into the bundle as its containers see them.
fn id_shift(root: &DataRoot) -> Option<IdShift> {
    root.id_map()
        .map(|map| IdShift::new(map.clone(), Direction::ToContainer))
}

/// Why one volume cannot be carried, if it cannot.
fn volume_refusal(
    root: &DataRoot,
    store: &VolumeStore,
    container: &str,
    name: &str,
    driver: &str,
) -> Option<String> {
    if let Err(e) = VolumeName::new(name) {
        return Some(format!("container {container}: {e}"));
    }
    let recorded = store
        .records
        .get(name)
        .map(|r| r.driver.as_str())
        .filter(|d| !d.is_empty());
    let driver = recorded.unwrap_or(driver);
    if driver != "local" {
        return Some(format!(
            "container {container}: volume `{name}` uses driver `{driver}`: its data lives with the plugin, not in this data-root; move it with the plugin's own tools"
        ));
    }
    let data = root.volume_data_dir(name);
    if !data.is_dir() {
        return Some(format!(
            "container {container}: volume `{name}` is missing here (`{}` does not exist): it was lost before this export",
            data.display()
        ));
    }
    // Export never follows a symlink: a volume directory or `_data` that is
    // one would carry whatever it points to (and no import accepts it).
    for dir in [root.volume_dir(name), data] {
        if dir
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            return Some(format!(
                "container {container}: volume `{name}`: `{}` is a symlink, not a directory: volmig never follows symlinks; replace it with the directory it points to",
                dir.display()
            ));
        }
    }
    let opts = root.volume_opts(name);
    if let Ok(bytes) = std::fs::read(&opts) {
        if let Err(go_error) = VolumeOptions::decode(&bytes) {
            return Some(format!(
                "`{}` would stop dockerd from starting ({go_error}): repair it before exporting",
                opts.display()
            ));
        }
    }
    None
}

/// Whether something is mounted on the volume's `_data` (another device
/// than its volume directory's): its tree is then the device's.
fn mounted_over(root: &DataRoot, name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::symlink_metadata(root.volume_dir(name)),
        std::fs::symlink_metadata(root.volume_data_dir(name)),
    ) {
        (Ok(v), Ok(d)) => v.dev() != d.dev(),
        _ => false,
    }
}

/// What a pre-copy round writes beside the bundle and reads: the
/// manifest of what it carries, and for a delta the base round's.
#[derive(Default)]
pub struct RoundOutput {
    pub manifest: Option<ManifestWriter>,
    pub since: Option<crate::bundle::since::Base>,
    /// A pre-copy round of running containers: files that change while
    /// read are carried as read and marked for the next round.
    pub tolerant: bool,
}

/// What `write` produced.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub trailer: Trailer,
    /// Entries not carried (sockets), with the reason.
    pub skipped: Vec<String>,
    /// Files that changed while they were read (a pre-copy round carries
    /// them as read; the next round carries them again).
    pub changed_while_read: Vec<String>,
}

/// Writes the planned bundle to `out`.
///
/// With a `round` in the plan's header, `round` says where the manifest
/// of what it carries goes and, for a delta, the base it is a delta of.
pub fn write(
    root: &DataRoot,
    plan: &ExportPlan,
    out: File,
    compression: Compression,
    round: RoundOutput,
    progress: &dyn Progress,
) -> Result<(ExportReport, File), ExportError> {
    let mut w =
        BundleWriter::new(out, compression, &plan.header, progress)?.with_id_shift(id_shift(root));
    if let Some(m) = round.manifest {
        w = w.with_manifest(m);
    }
    if let Some(base) = round.since {
        w = w.with_base(base);
    }
    w = w.tolerate_changes(round.tolerant);
    if !plan.containers.is_empty() {
        progress.begin("container files", None);
    }
    for c in &plan.containers {
        w.add_file(layout::container(&c.id).as_bytes(), &c.dir, None)?;
        if let Some(cp) = plan
            .header
            .containers
            .iter()
            .find(|b| b.id == c.id)
            .and_then(|b| b.checkpoint.as_ref())
        {
            w.add_file(
                layout::checkpoints(&c.id).as_bytes(),
                &root.checkpoints_dir(&c.id),
                None,
            )?;
            w.add_tree(
                layout::checkpoint(&c.id, cp).as_bytes(),
                &root.checkpoint_dir(&c.id, cp),
                None,
            )?;
        }
        for file in crate::dataroot::CONTAINER_FILES {
            let path = root.container_file(&c.id, file);
            if path.exists() {
                w.add_file(layout::container_file(&c.id, file).as_bytes(), &path, None)?;
            }
        }
    }
    for (name, has_opts) in &plan.volumes {
        progress.begin(&format!("volume {name}"), None);
        let (volume_dir, data_dir) = (root.volume_dir(name), root.volume_data_dir(name));
        let data = match plan.device(name) {
            // A bind volume's data: the device's tree, as the container sees it.
            Some(d) if d.data_carried => VolumeData::Tree(Path::new(&d.device)),
            // The data is on the device, left behind. `_data` is carried
            // as it is on disk (whatever lies beneath the mountpoint),
            // never through a mount: a bind of the same filesystem cannot
            // be told by its device number, so a bind's `_data` is the
            // directory alone.
            Some(d) if d.location == "bind" || mounted_over(root, name) => {
                VolumeData::DirOnly(&data_dir)
            }
            _ => VolumeData::Tree(&data_dir),
        };
        let opts = has_opts.then(|| root.volume_opts(name));
        layout::write_volume(&mut w, name, &volume_dir, data, opts.as_deref())?;
        progress.end();
    }
    let skipped = std::mem::take(&mut w.skipped);
    let changed_while_read = std::mem::take(&mut w.dirty);
    let (trailer, out) = w.finish()?;
    Ok((
        ExportReport {
            trailer,
            skipped,
            changed_while_read,
        },
        out,
    ))
}
