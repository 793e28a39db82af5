//! Image retention: which store images stay (those of the active, pending and previous
//! generations, the newest `RETENTION` older ones, partial downloads) and removing the rest.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use crate::fsutil::PathError;
use crate::host::machine::Machine;
use crate::state::State;

/// The (extension, store file) pairs that must stay: every image of the active, pending and
/// previous generations and of the newest `retention` retired ones.
pub fn kept_images(state: &State, retention: usize) -> BTreeSet<(String, String)> {
    [&state.active, &state.pending, &state.previous]
        .into_iter()
        .flatten()
        .chain(state.retired.iter().take(retention))
        .flat_map(|g| {
            g.extensions
                .iter()
                .map(|(n, e)| (n.clone(), e.file.clone()))
        })
        .collect()
}

/// Remove store images that [`kept_images`] does not keep (partial downloads stay, for
/// resuming); returns what was removed.
pub fn collect_garbage(m: &Machine, state: &State) -> Result<Vec<PathBuf>, PathError> {
    let keep = kept_images(state, m.settings.retention);
    let mut removed = Vec::new();
    let Ok(dirs) = fs::read_dir(m.store_dir()) else {
        return Ok(removed);
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
            let p = f.path();
            fs::remove_file(&p).map_err(|e| PathError::new("remove", &p, e))?;
            removed.push(p);
        }
    }
    Ok(removed)
}
