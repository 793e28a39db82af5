//! The versioned state file: generations, highest manifest serial seen, switch journal, history.
//!
//! The state is loaded once, changed in memory through the transition methods of
//! [`transitions`](self), and committed once with [`State::save`], which goes through
//! [`upd_durable::atomic_write`]: a crash leaves either the old file or the new one.

mod transitions;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use transitions::{SwitchPhase, TransitionError};

use upd_durable::{atomic_write, PathError};

/// The schema version this build reads and writes.
pub const SCHEMA: u32 = 1;
/// The state file's name inside `STATE_DIR`.
pub const STATE_FILE: &str = "state.json";
/// How many history entries are kept (oldest dropped first).
pub const HISTORY_LIMIT: usize = 50;
/// Most retired generations remembered (the highest `RETENTION`).
pub const RETIRED_LIMIT: usize = 32;

/// What can go wrong loading, saving or changing the state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the file failed.
    #[error(transparent)]
    Io(#[from] PathError),
    /// The file is not valid state JSON.
    #[error("corrupt state file {path}: {source}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by a newer upd with a schema this one does not know.
    #[error("state file {path} has schema {found}, newer than the {supported} this upd understands; upgrade upd or restore a backup")]
    NewerSchema {
        /// The state file.
        path: PathBuf,
        /// The schema in the file.
        found: u32,
        /// The newest schema this build knows.
        supported: u32,
    },
    /// A transition was asked for from a state that does not allow it.
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

/// Everything upd remembers between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Always [`SCHEMA`] when written by this build.
    pub schema: u32,
    /// Highest manifest serial accepted, per channel (rollback protection).
    pub highest_serial: BTreeMap<String, u64>,
    /// The channel keys (sorted key ids) the serials in `highest_serial` were signed under;
    /// when a root rotates them, serials start afresh (TUF fast-forward recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_keys: Option<String>,
    /// ETag of the last manifest fetched, for conditional GET.
    pub manifest_etag: Option<String>,
    /// The generation running now.
    pub active: Option<Generation>,
    /// A staged generation waiting for its first good boot.
    pub pending: Option<Generation>,
    /// The generation before `active`, kept for rollback.
    pub previous: Option<Generation>,
    /// A link switch in progress; `upd boot` finishes or undoes it.
    pub journal: Option<SwitchJournal>,
    /// OS releases whose boot failed; not retried until a newer one appears.
    pub failed_releases: BTreeSet<String>,
    /// OS releases an operator rolled back from (`upd rollback`): not staged again on this
    /// machine's own choice until a newer release appears; `upd pull VERSION` takes one again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub held_releases: BTreeSet<String>,
    /// Recent events, oldest first, at most [`HISTORY_LIMIT`].
    pub history: Vec<HistoryEntry>,
    /// The highest generation id ever handed out, so that ids never repeat.
    #[serde(default)]
    pub last_generation_id: u64,
    /// Generations that left `previous`, newest first, at most [`RETIRED_LIMIT`]: never booted
    /// again, but `RETENTION` keeps the images of the newest ones in the store.
    #[serde(default)]
    pub retired: Vec<Generation>,
}

/// One OS version plus the exact extension builds that go with it; never mutated once made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    /// Unique, increasing id (see [`State::next_generation_id`]).
    pub id: u64,
    /// The OS release version (os-release VERSION_ID).
    pub os_version: String,
    /// The OS slot (USR-A / USR-B) holding this OS, if known.
    pub slot: Option<String>,
    /// Extension name → image in the store.
    pub extensions: BTreeMap<String, ExtImage>,
    /// When the generation was made.
    pub created: DateTime<Utc>,
}

/// One extension image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtImage {
    /// The extension's version.
    pub version: String,
    /// The file name inside the store directory of this extension.
    pub file: String,
    /// Lower-case hex SHA-256 of the image.
    pub sha256: String,
}

impl ExtImage {
    /// The store image of build `b`, kept in the store as `file`.
    pub fn of(b: &upd_channels::manifest::ExtBuild, file: String) -> Self {
        Self {
            version: b.version.to_string(),
            file,
            sha256: b.image.sha256.to_hex(),
        }
    }
}

/// Link name → link target; `None` means the link does not exist.
pub type LinkSet = BTreeMap<String, Option<PathBuf>>;

/// The intent of a multi-step link switch, written before the first link changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchJournal {
    /// The generation that becomes active when the switch finishes.
    pub target: Generation,
    /// The links before the switch (what an undo restores).
    pub from: LinkSet,
    /// The links after the switch.
    pub to: LinkSet,
    /// How far the switch got.
    pub phase: SwitchPhase,
}

/// What happened, for `upd status` and the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// A new OS generation was staged, waiting for a reboot.
    Staged,
    /// A pending generation was dropped (withdrawn or superseded).
    Dropped,
    /// A pending generation booted well and became active.
    Promoted,
    /// A pending generation failed to boot.
    Failed,
    /// A same-OS link switch finished.
    Switched,
    /// A link switch was undone.
    SwitchAborted,
    /// The previous generation was made pending again by `upd rollback`.
    RollbackStaged,
}

/// One line of history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub event: Event,
    /// Which generation.
    pub generation: u64,
    /// Its OS version.
    pub os_version: String,
}

impl Default for State {
    fn default() -> Self {
        State {
            schema: SCHEMA,
            highest_serial: BTreeMap::new(),
            serial_keys: None,
            manifest_etag: None,
            active: None,
            pending: None,
            previous: None,
            journal: None,
            failed_releases: BTreeSet::new(),
            held_releases: BTreeSet::new(),
            history: Vec::new(),
            last_generation_id: 0,
            retired: Vec::new(),
        }
    }
}

impl State {
    /// The state file's path inside `dir` (the re-rooted `STATE_DIR`).
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Load the state from `dir`; a missing file is a fresh state. Refuses a newer schema and corrupt JSON.
    pub fn load(dir: &Path) -> Result<State, StateError> {
        let path = State::path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(PathError::new("read state", &path, e).into()),
        };
        State::from_bytes(&bytes, &path)
    }

    /// Parse state bytes; `path` is only for messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<State, StateError> {
        #[derive(Deserialize)]
        struct Schema {
            schema: u32,
        }
        let corrupt = |source| StateError::Corrupt {
            path: path.to_path_buf(),
            source,
        };
        // Read the schema alone first, so that a newer file is refused for what it is, not as corrupt.
        let found = serde_json::from_slice::<Schema>(bytes)
            .map_err(corrupt)?
            .schema;
        if found > SCHEMA {
            return Err(StateError::NewerSchema {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA,
            });
        }
        let state: State = serde_json::from_slice(bytes).map_err(corrupt)?;
        if state.schema != SCHEMA {
            let msg = format!("unknown schema {}", state.schema);
            return Err(corrupt(serde::de::Error::custom(msg)));
        }
        Ok(state)
    }

    /// Commit the state to `dir` in one atomic write (the only way state reaches the disk).
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("state serialises");
        bytes.push(b'\n');
        atomic_write(&State::path(dir), &bytes, 0o644)?;
        Ok(())
    }

    /// Hand out a fresh generation id (recorded, so it never repeats once saved).
    pub fn next_generation_id(&mut self) -> u64 {
        let seen = [&self.active, &self.pending, &self.previous]
            .into_iter()
            .flatten()
            .map(|g| g.id);
        let highest = seen
            .chain(self.journal.iter().map(|j| j.target.id))
            .max()
            .unwrap_or(0);
        self.last_generation_id = self.last_generation_id.max(highest) + 1;
        self.last_generation_id
    }

    fn push_history(&mut self, at: DateTime<Utc>, event: Event, g: &Generation) {
        self.history.push(HistoryEntry {
            at,
            event,
            generation: g.id,
            os_version: g.os_version.clone(),
        });
        let excess = self.history.len().saturating_sub(HISTORY_LIMIT);
        self.history.drain(..excess);
    }
}

#[cfg(test)]
mod tests;
