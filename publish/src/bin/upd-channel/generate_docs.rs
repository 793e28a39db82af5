//! `upd-channel generate-docs DIR` (hidden): upd-channel(1) and one page per subcommand in
//! DIR/man, bash, zsh and fish completions in DIR/completions (`scripts/gen-docs` runs it).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap_complete::Shell;

/// Arguments of `generate-docs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The output directory (man/ and completions/ are created in it).
    dir: PathBuf,
}

/// Writes the pages and completions of `cmd`.
pub fn run(args: Args, cmd: clap::Command) -> Result<()> {
    let man = args.dir.join("man");
    let completions = args.dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    man_pages(cmd.clone(), "1", &man).context("writing the upd-channel man pages")?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "upd-channel", &completions)
            .with_context(|| format!("writing the {shell} completion"))?;
    }
    Ok(())
}

/// One page per command and visible subcommand, in `section` (clap_mangen's `generate_to` does
/// the same in section 1 only).
fn man_pages(cmd: clap::Command, section: &str, dir: &std::path::Path) -> std::io::Result<()> {
    fn each(cmd: clap::Command, section: &str, dir: &std::path::Path) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            each(sub, section, dir)?;
        }
        clap_mangen::Man::new(cmd)
            .section(section.to_string())
            .generate_to(dir)
            .map(drop)
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    each(cmd, section, dir)
}
