//! `volmig completions SHELL` and `volmig man`: shell completion scripts
//! and the roff man page, generated from the clap definitions so that they
//! never drift from `--help`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, Outcome};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn completions(args: &CompletionsArgs) -> anyhow::Result<Outcome> {
    let mut text = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "volmig", &mut text);
    super::emit(&String::from_utf8_lossy(&text))?;
    Ok(Outcome::Good)
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write volmig.1 and one volmig-<command>.1 per command into DIR
    /// (e.g. /usr/local/share/man/man1) instead of printing volmig.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn man(args: &ManArgs) -> anyhow::Result<Outcome> {
    let Some(dir) = &args.dir else {
        let mut text = Vec::new();
        clap_mangen::Man::new(Cli::command()).render(&mut text)?;
        super::emit(&String::from_utf8_lossy(&text))?;
        return Ok(Outcome::Good);
    };
    let fix = || {
        format!(
            "cannot write the man pages into `{}`: check its permissions or pass another --dir",
            dir.display()
        )
    };
    std::fs::create_dir_all(dir).with_context(fix)?;
    clap_mangen::generate_to(Cli::command(), dir).with_context(fix)?;
    super::emit(&format!(
        "wrote the man pages into {}: run `man volmig`\n",
        dir.display()
    ))?;
    Ok(Outcome::Good)
}
