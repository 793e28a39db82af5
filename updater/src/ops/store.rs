//! The image store: where a build lives, fetching the builds a plan chose that are not there
//! yet, and checking each one from inside against the host it will merge on.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use upd_channels::builds::Plan;
use upd_channels::compat;
use upd_channels::manifest::{ExtBuild, ExtIdentity};
use upd_channels::osrelease::HostIdentity;
use upd_image as image;

use crate::host::machine::Machine;
use crate::ops::Error;
use crate::remote::channel;
use crate::remote::fetch::{ensure_free_space, DeltaSource, FetchItem, Fetcher, Progress, Seed};
use upd_durable::PathError;

/// Bytes a download moved.
#[derive(Debug, Clone, Copy, Default)]
pub struct Downloaded {
    /// Bytes received from the network.
    pub bytes: u64,
    /// Bytes reused from partial files of an earlier run.
    pub resumed: u64,
    /// Bytes copied from images already in the store (delta downloads).
    pub reused: u64,
}

/// The store file name of a build: name, version and a hash prefix (two builds never share a file).
pub fn store_file_name(b: &ExtBuild) -> String {
    format!(
        "{}-{}-{}.raw",
        b.name,
        b.version,
        &b.image.sha256.to_hex()[..12]
    )
}

/// Download the chosen builds that are not in the store yet; re-hash those that are.
pub async fn download(
    m: &Machine,
    fetcher: &Fetcher,
    plan: &Plan,
    progress: &dyn Fn() -> Arc<dyn Progress>,
    moved: &mut Downloaded,
) -> Result<Vec<PathBuf>, Error> {
    let servers = channel::servers(m)?;
    let mut items = Vec::new();
    for b in plan.chosen() {
        let dest = m.store_file(b.name.as_str(), &store_file_name(b));
        if dest.exists() && cached_hash(&dest)? == b.image.sha256 {
            continue;
        }
        if dest.exists() {
            tracing::warn!(path = %dest.display(), "store image does not match its hash; fetching it again");
            fs::remove_file(&dest).map_err(|e| PathError::new("remove", &dest, e))?;
        }
        let dir = dest.parent().expect("store files have a directory");
        upd_durable::create_dir_durable(dir)?;
        let delta = b.image.chunk_index.as_ref().map(|ix| DeltaSource {
            index_urls: servers.iter().map(|s| ix.path.url_under(s)).collect(),
            index_size: ix.size,
            index_sha256: ix.sha256.0,
            seeds: seeds(dir, &dest).into_iter().map(Seed::file).collect(),
        });
        items.push(FetchItem {
            urls: servers.iter().map(|s| b.image.path.url_under(s)).collect(),
            dest,
            size: b.image.size,
            sha256: b.image.sha256.0,
            progress: progress(),
            delta,
        });
    }
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let needed: u64 = items.iter().map(|i| i.size).sum();
    upd_durable::create_dir_durable(&m.store_dir())?;
    ensure_free_space(&m.store_dir(), needed)?;
    let results = fetcher
        .fetch_all(&items, m.settings.parallel_downloads)
        .await;
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(o) => {
                moved.bytes += o.bytes_downloaded;
                moved.resumed += o.resumed_from;
                moved.reused += o.reused;
            }
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(items.into_iter().map(|i| i.dest).collect()),
        1 => Err(errors.remove(0).into()),
        _ => Err(Error::Fetches(errors)),
    }
}

/// Read each chosen image's extension-release from inside the image and apply systemd-sysext's
/// rules against `host` (running or upcoming); the image must also declare what the manifest says.
pub fn check_images(m: &Machine, plan: &Plan, host: &HostIdentity) -> Result<(), Error> {
    for b in plan.chosen() {
        let path = m.store_file(b.name.as_str(), &store_file_name(b));
        let bad = |why: String| Error::Incompatible {
            path: path.clone(),
            why,
        };
        let (found, release) = image::read_extension_release(&path, b.name.as_str())
            .map_err(|e| bad(e.to_string()))?;
        compat::check(&format!("{}.raw", b.name), &found, &release, host)
            .map_err(|e| bad(e.to_string()))?;
        let inside = ExtIdentity::from_release(&release);
        if inside != b.release {
            return Err(bad(format!(
                "its extension-release says {inside:?}, the signed manifest says {:?}",
                b.release
            )));
        }
    }
    Ok(())
}

/// The images of one extension's store directory a delta download may take chunks from: every
/// promoted build (not `dest` itself, no `.partial`, no temporary), newest first.
fn seeds(dir: &Path, dest: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            p != dest && name.ends_with(".raw") && !name.starts_with(upd_durable::TMP_PREFIX)
        })
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, p)| p).collect()
}

/// SHA-256 of an image already in the store, re-checked before it is reused.
fn cached_hash(path: &Path) -> Result<upd_channels::manifest::Sha256, PathError> {
    upd_durable::hash_file(path).map(|(_, h)| upd_channels::manifest::Sha256(h))
}
