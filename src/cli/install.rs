//! `volmig install-plugin`: puts this binary in place as the docker CLI
//! plugin, so that `docker volmig ...` runs it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::docker_plugin::{self, InstallMode, SYSTEM_PLUGIN_DIR};
use crate::engine::context::ClientSettings;

use super::{Cli, Outcome};

#[derive(Debug, Args)]
pub struct InstallPluginArgs {
    /// The cli-plugins directory to put `docker-volmig` in. Default:
    /// $DOCKER_CONFIG/cli-plugins, else ~/.docker/cli-plugins (this user).
    #[arg(long, value_name = "DIR", conflicts_with = "system")]
    pub dir: Option<PathBuf>,

    /// Install for every user, in /usr/local/lib/docker/cli-plugins (as root).
    #[arg(long)]
    pub system: bool,

    /// Copy the binary instead of linking to it (keep the plugin when this
    /// binary is moved or removed). Default: a symlink to this binary.
    #[arg(long)]
    pub copy: bool,
}

pub fn run(cli: &Cli, args: &InstallPluginArgs) -> anyhow::Result<Outcome> {
    let dir = match (&args.dir, args.system) {
        (Some(dir), _) => dir.clone(),
        (None, true) => PathBuf::from(SYSTEM_PLUGIN_DIR),
        (None, false) => ClientSettings::from_env()
            .config_dir()
            .map(|c| docker_plugin::user_plugin_dir(&c))
            .context("neither $DOCKER_CONFIG nor $HOME is set: pass --dir DIR or --system")?,
    };
    let exe = std::env::current_exe().context(
        "cannot find this volmig binary (/proc/self/exe): pass --dir and copy it by hand",
    )?;
    let mode = if args.copy {
        InstallMode::Copy
    } else {
        InstallMode::Symlink
    };
    let path = docker_plugin::install(&exe, &dir, mode)?;
    if !cli.quiet {
        let how = match mode {
            InstallMode::Symlink => format!("a symlink to {}", exe.display()),
            InstallMode::Copy => format!("a copy of {}", exe.display()),
        };
        super::emit(&format!(
            "installed {} ({how}): run `docker volmig --help`\n",
            path.display()
        ))?;
    }
    Ok(Outcome::Good)
}
