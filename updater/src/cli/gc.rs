//! `upd gc`: remove store images that no generation uses.

use std::collections::BTreeSet;
use std::fs;

use chrono::Utc;

use super::exit;
use crate::machine::Machine;
use crate::pull::Session;

/// Options of `gc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Wait for another upd to finish instead of failing.
    #[arg(long)]
    wait: bool,
}

/// Run it: keeps every image of the active, pending and previous generations, and partial downloads.
pub fn run(m: Machine, a: &Args) -> anyhow::Result<u8> {
    let s = Session::open(m, a.wait, true, Utc::now())?;
    let keep: BTreeSet<(String, String)> = [&s.state.active, &s.state.pending, &s.state.previous]
        .into_iter()
        .flatten()
        .flat_map(|g| {
            g.extensions
                .iter()
                .map(|(n, e)| (n.clone(), e.file.clone()))
        })
        .collect();
    let mut removed = 0u64;
    let Ok(dirs) = fs::read_dir(s.machine.store_dir()) else {
        return Ok(exit::OK);
    };
    for d in dirs.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        let Ok(files) = fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.flatten() {
            let file = f.file_name().to_string_lossy().into_owned();
            if file.ends_with(".partial") || keep.contains(&(name.clone(), file.clone())) {
                continue;
            }
            fs::remove_file(f.path())?;
            eprintln!("upd: removed {}", f.path().display());
            removed += 1;
        }
    }
    eprintln!("upd: gc removed {removed} image(s)");
    Ok(exit::OK)
}
