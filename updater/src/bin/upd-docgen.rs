//! upd-docgen DIR: write upd's man pages (upd(8) and one page per subcommand, upd.conf(5)) to
//! DIR/man and its bash, zsh and fish completions to DIR/completions, all generated from the
//! clap definitions and the configuration key table. A separate binary so that the installed
//! `upd` carries neither clap_mangen nor clap_complete (`scripts/gen-docs` runs it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};
use upd::cli::Cli;
use upd::config::{explain, Root, KEYS, LAYERS};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: upd-docgen DIR");
        return ExitCode::from(2);
    };
    match generate(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upd-docgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate(dir: &Path) -> anyhow::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let cmd = Cli::full_command();
    man_pages(cmd.clone(), "8", &man).context("writing the upd man pages")?;
    write(&man.join("upd.conf.5"), &upd_conf()?)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "upd", &completions)
            .with_context(|| format!("writing the {shell} completion"))?;
    }
    Ok(())
}

/// upd.conf(5): the layered files and every key of [`KEYS`] with its default.
fn upd_conf() -> anyhow::Result<Vec<u8>> {
    // No file under a root that does not exist: every value is the default.
    let defaults = explain(&Root::new(Path::new("/nonexistent/upd-docgen")), None, &[])
        .context("computing the default settings")?;
    let mut r = Roff::new();
    r.control("TH", ["UPD.CONF", "5"]);
    r.control("SH", ["NAME"]);
    r.text([roman("upd.conf - configuration of upd")]);
    r.control("SH", ["SYNOPSIS"]);
    let files: Vec<String> = LAYERS
        .iter()
        .map(|l| format!("{l}/upd.conf, {l}/upd.conf.d/*.conf"))
        .collect();
    r.text([roman(files.join("; "))]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([roman(
        "KEY=VALUE lines, read in the order above (a later file wins; drop-ins in name order \
         after their directory's upd.conf), then --config FILE, then each --set KEY=VALUE. \
         Every key and value is checked when the configuration is loaded; an error names the \
         file and line. `upd config` prints each effective value and where it came from.",
    )]);
    r.control("SH", ["KEYS"]);
    for key in KEYS {
        let default = defaults
            .iter()
            .find(|e| e.key == key)
            .map_or(String::new(), |e| e.value.clone());
        r.control("TP", []);
        r.text([bold(key)]);
        let default = if default.is_empty() {
            "unset".to_string()
        } else {
            default
        };
        r.text([roman(format!("Default: {default}."))]);
    }
    r.control("SH", ["SEE ALSO"]);
    r.text([roman("upd(8), upd-config(8), systemd-sysext(8)")]);
    Ok(r.render().into_bytes())
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
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
