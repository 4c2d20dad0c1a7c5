//! `volmig completions SHELL` and `volmig man`: shell completion scripts
//! and the roff man page, generated from the clap definitions so that they
//! never drift from `--help`.

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

pub fn man() -> anyhow::Result<Outcome> {
    let mut text = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut text)?;
    super::emit(&String::from_utf8_lossy(&text))?;
    Ok(Outcome::Good)
}
