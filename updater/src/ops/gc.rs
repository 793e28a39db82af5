//! Image retention: which store images stay (those of the active, pending and previous
//! generations, the newest `RETENTION` older ones, partial downloads) and removing the rest.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use crate::host::machine::Machine;
use crate::state::State;
use upd_durable::PathError;

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;

    use super::*;
    use crate::state::{ExtImage, Generation};

    fn generation(id: u64, file: &str) -> Generation {
        let img = ExtImage {
            version: "1".into(),
            file: file.into(),
            sha256: "ab".repeat(32),
        };
        Generation {
            id,
            os_version: "1.0.0".into(),
            slot: None,
            extensions: BTreeMap::from([("hello".to_string(), img)]),
            created: Utc::now(),
        }
    }

    #[test]
    fn retention_keeps_the_newest_retired_and_always_the_three() {
        let st = State {
            active: Some(generation(5, "a.raw")),
            pending: Some(generation(6, "p.raw")),
            previous: Some(generation(4, "b.raw")),
            retired: vec![
                generation(3, "c.raw"),
                generation(2, "d.raw"),
                generation(1, "e.raw"),
            ],
            ..State::default()
        };
        let files =
            |n: usize| -> Vec<String> { kept_images(&st, n).into_iter().map(|(_, f)| f).collect() };
        assert_eq!(files(0), ["a.raw", "b.raw", "p.raw"]);
        assert_eq!(files(2), ["a.raw", "b.raw", "c.raw", "d.raw", "p.raw"]);
        assert_eq!(files(32).len(), 6);
    }
}
