//! The generated man pages and completions cover the whole interface, `upd --help` lists every
//! exit code, and the units' `Documentation=` point at something the install procedure puts
//! there.

use std::path::{Path, PathBuf};
use std::process::Command;

use upd::cli::exit::TABLE;
use upd::cli::Cli;
use upd::config::KEYS;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// Runs the real upd-docgen into a fresh directory.
fn generated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_upd-docgen"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "upd-docgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// roff source of `s` as clap_mangen writes it (hyphens escaped).
fn roff(s: &str) -> String {
    s.replace('-', "\\-")
}

// Situation: upd-docgen run as scripts/gen-docs runs it.
#[test]
fn man_pages_and_completions_cover_every_subcommand_and_key() {
    let dir = generated();
    let man = dir.path().join("man");
    let upd8 = read(&man.join("upd.8"));
    assert!(upd8.contains(".TH upd 8"), "{upd8}");
    let subcommands: Vec<String> = Cli::full_command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .collect();
    assert!(subcommands.len() >= 12, "{subcommands:?}");
    for sc in &subcommands {
        assert!(
            upd8.contains(&roff(sc)),
            "upd.8 does not mention subcommand {sc}"
        );
        assert!(
            man.join(format!("upd-{sc}.8")).is_file(),
            "no page upd-{sc}.8"
        );
        for c in ["upd.bash", "_upd", "upd.fish"] {
            let text = read(&dir.path().join("completions").join(c));
            assert!(text.contains(sc.as_str()), "completion {c} lacks {sc}");
        }
    }
    // The exit codes of `upd --help` are in upd(8) too.
    for (code, name, _) in TABLE {
        assert!(
            upd8.contains(&format!("{code:>3}  {name}")),
            "upd.8 lacks exit code {code} {name}"
        );
    }
    let conf = read(&man.join("upd.conf.5"));
    assert!(conf.contains(".TH UPD.CONF 5"), "{conf}");
    for key in KEYS {
        assert!(
            conf.contains(&format!("\\fB{}\\fR", roff(key))),
            "upd.conf.5 lacks key {key}"
        );
    }
}

// Situation: the real binary's --help, as an operator reads it.
#[test]
fn help_lists_every_exit_code() {
    let out = Command::new(env!("CARGO_BIN_EXE_upd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (code, name, meaning) in TABLE {
        let line = format!("{code:>3}  {name:<16} {meaning}");
        assert!(help.contains(&line), "upd --help lacks `{line}`:\n{help}");
    }
}

// Situation: the shipped units. A `file:///usr/share/doc/upd/X` must be a file X of the
// repository that the README's install procedure installs there; a `man:NAME(S)` a page
// upd-docgen generates.
#[test]
fn every_documentation_uri_of_the_units_exists() {
    let dir = generated();
    let readme = read(&repo().join("README.md"));
    let mut seen = 0;
    for e in std::fs::read_dir(repo().join("systemd/system")).unwrap() {
        let unit = e.unwrap().path();
        for line in read(&unit).lines() {
            let Some(uris) = line.strip_prefix("Documentation=") else {
                continue;
            };
            for uri in uris.split_whitespace() {
                seen += 1;
                if let Some(rel) = uri.strip_prefix("file:///usr/share/doc/upd/") {
                    assert!(
                        repo().join(rel).is_file(),
                        "{}: {uri}: no {rel}",
                        unit.display()
                    );
                    assert!(
                        readme.contains(&format!("{rel} /usr/share/doc/upd/{rel}")),
                        "the README's install steps do not install {rel} for {uri}"
                    );
                } else if let Some(page) = uri.strip_prefix("man:") {
                    let (name, sec) = page.trim_end_matches(')').split_once('(').unwrap();
                    assert!(
                        dir.path()
                            .join("man")
                            .join(format!("{name}.{sec}"))
                            .is_file(),
                        "{}: {uri} is not generated",
                        unit.display()
                    );
                } else {
                    panic!("{}: unexpected Documentation={uri}", unit.display());
                }
            }
        }
    }
    assert!(seen >= 4, "only {seen} Documentation= URIs");
}
