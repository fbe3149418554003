//! Pending actions on disk: one JSON file per action under `<state_dir>/actions/`.
//!
//! Every read-modify-write happens inside [`Store::lock`], an exclusive `flock` on
//! `<state_dir>/state.lock` that serializes tasks and processes alike (the safety limits in
//! `limits.json` share it, so "check the cooldown, then start the action" is one step). Files are
//! replaced atomically ([`aiops_core::fsutil::write_atomic`]), so a reader sees the old or the new
//! file whatever moment a writer dies at. A file that does not parse is moved aside to
//! `<name>.corrupt` and reported with its path, never silently dropped; a file written by a newer
//! schema is left alone and refused.

use std::fs;
use std::path::{Path, PathBuf};

use aiops_core::fsutil::{self, FsError, LockGuard};
use serde::Deserialize;

use crate::limits::LimitsState;
use crate::state::{
    ACTION_SCHEMA, Action, ActionId, ActionState, TransitionError, check_transition,
};

/// Errors of the action store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(
        "{path} was written by a newer aiops (schema {found}; this build reads up to {supported}); upgrade aiops or move the file away"
    )]
    FutureSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path} is not a valid action file ({message}); moved it aside to {moved_to}")]
    Corrupt {
        path: PathBuf,
        moved_to: PathBuf,
        message: String,
    },
    #[error(
        "the safety limits in {path} are unreadable ({message}); aiops acts on nothing until the file is repaired or removed (removing it forgets cooldowns, the hourly count and the breaker)"
    )]
    LimitsUnreadable { path: PathBuf, message: String },
    #[error("action {id}: {source}")]
    Transition {
        id: ActionId,
        #[source]
        source: TransitionError,
    },
    #[error("action {0} already exists")]
    Exists(ActionId),
    #[error("action {0} does not exist")]
    Missing(ActionId),
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The action store of one state directory.
#[derive(Debug, Clone)]
pub struct Store {
    state_dir: PathBuf,
    actions_dir: PathBuf,
    lock_path: PathBuf,
}

/// What [`Store::open`] found and repaired.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Temporary files of interrupted writes that were removed.
    pub stale_temporaries: usize,
}

/// Everything readable in the store, plus what was not.
#[derive(Debug, Default)]
pub struct Scan {
    pub actions: Vec<Action>,
    /// Files that could not be used (corrupt ones were moved aside; future ones left in place).
    pub problems: Vec<StoreError>,
}

impl Store {
    /// Opens (creating, mode 0700) the store in `state_dir` and removes stale temporaries.
    pub fn open(state_dir: &Path) -> Result<(Self, OpenReport), StoreError> {
        fsutil::ensure_dir(state_dir)?;
        let actions_dir = state_dir.join("actions");
        fsutil::ensure_dir(&actions_dir)?;
        let store = Self {
            state_dir: state_dir.to_owned(),
            actions_dir,
            lock_path: state_dir.join("state.lock"),
        };
        // Under the lock: a live writer in another process always holds it while its temporary
        // file exists, so anything we find here belongs to a writer that died.
        let _guard = fsutil::lock_exclusive(&store.lock_path)?;
        let stale_temporaries = fsutil::remove_stale_temporaries(&store.actions_dir)?
            + fsutil::remove_stale_temporaries(state_dir)?;
        if stale_temporaries > 0 {
            tracing::warn!(
                count = stale_temporaries,
                dir = %store.actions_dir.display(),
                "removed temporary files left by an interrupted write"
            );
        }
        Ok((store, OpenReport { stale_temporaries }))
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn actions_dir(&self) -> &Path {
        &self.actions_dir
    }

    /// Takes the state lock (waiting for other holders). Keep it short: never across an
    /// execution or a verification.
    pub fn lock(&self) -> Result<Locked<'_>, StoreError> {
        let guard = fsutil::lock_exclusive(&self.lock_path)?;
        Ok(Locked {
            store: self,
            _guard: guard,
        })
    }

    fn path_of(&self, id: &ActionId) -> PathBuf {
        self.actions_dir.join(format!("{id}.json"))
    }
}

/// The store while its lock is held.
#[derive(Debug)]
pub struct Locked<'a> {
    store: &'a Store,
    _guard: LockGuard,
}

impl Locked<'_> {
    /// The action with this id, `None` if there is no such file.
    pub fn get(&self, id: &ActionId) -> Result<Option<Action>, StoreError> {
        let path = self.store.path_of(id);
        match fs::read(&path) {
            Ok(bytes) => read_action(&path, &bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::new("cannot read", &path, e).into()),
        }
    }

    /// Every action, oldest first, with the files that could not be read.
    pub fn scan(&self) -> Result<Scan, StoreError> {
        let dir = &self.store.actions_dir;
        let mut scan = Scan::default();
        let entries = fs::read_dir(dir).map_err(|e| FsError::new("cannot list", dir, e))?;
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        for path in paths {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    scan.problems
                        .push(FsError::new("cannot read", &path, e).into());
                    continue;
                }
            };
            match read_action(&path, &bytes) {
                Ok(a) => scan.actions.push(a),
                Err(e) => scan.problems.push(e),
            }
        }
        scan.actions
            .sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(scan)
    }

    /// An id that no file (action or corrupt leftover) uses yet.
    pub fn fresh_id(&self) -> ActionId {
        loop {
            let id = ActionId::random();
            let taken = fs::read_dir(&self.store.actions_dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with(id.as_str()))
                })
                .unwrap_or(false);
            if !taken {
                return id;
            }
        }
    }

    /// Writes a new action (its id must be unused).
    pub fn create(&self, action: &Action) -> Result<(), StoreError> {
        if self.store.path_of(&action.id).exists() {
            return Err(StoreError::Exists(action.id.clone()));
        }
        self.write(action)
    }

    /// Replaces an action, refusing a state change the state machine does not allow. A pending
    /// action may be rewritten in place (a repeat of its alert refreshes it).
    pub fn update(&self, action: &Action) -> Result<(), StoreError> {
        let Some(disk) = self.get(&action.id)? else {
            return Err(StoreError::Missing(action.id.clone()));
        };
        if !(disk.state == action.state && disk.state == ActionState::Pending) {
            check_transition(disk.state, action.state).map_err(|source| {
                StoreError::Transition {
                    id: action.id.clone(),
                    source,
                }
            })?;
        }
        self.write(action)
    }

    fn write(&self, action: &Action) -> Result<(), StoreError> {
        let mut bytes = serde_json::to_vec_pretty(action).map_err(|source| StoreError::Encode {
            what: format!("action {}", action.id),
            source,
        })?;
        bytes.push(b'\n');
        fsutil::write_atomic(&self.store.path_of(&action.id), &bytes)?;
        Ok(())
    }

    /// The persisted safety limits (defaults when the file does not exist yet).
    pub fn limits(&self) -> Result<LimitsState, StoreError> {
        LimitsState::load(&self.store.state_dir.join(LimitsState::FILE))
    }

    pub fn save_limits(&self, limits: &LimitsState) -> Result<(), StoreError> {
        limits.save(&self.store.state_dir.join(LimitsState::FILE))
    }
}

/// Parses an action file, refusing future schemas and moving unparseable files aside.
fn read_action(path: &Path, bytes: &[u8]) -> Result<Action, StoreError> {
    #[derive(Deserialize)]
    struct Probe {
        schema: Option<u32>,
    }
    let parsed = serde_json::from_slice::<Probe>(bytes).map_err(|e| e.to_string());
    if let Ok(Probe {
        schema: Some(found),
    }) = parsed
        && found > ACTION_SCHEMA
    {
        return Err(StoreError::FutureSchema {
            path: path.to_owned(),
            found,
            supported: ACTION_SCHEMA,
        });
    }
    let result =
        parsed.and_then(|_| serde_json::from_slice::<Action>(bytes).map_err(|e| e.to_string()));
    let message = match result {
        Ok(action) if action.schema == ACTION_SCHEMA => {
            let expected = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            if expected.as_deref() == Some(action.id.as_str()) {
                return Ok(action);
            }
            format!("its id {} does not match its file name", action.id)
        }
        Ok(action) => format!("unknown schema {}", action.schema),
        Err(e) => e,
    };
    Err(move_aside(path, message))
}

fn move_aside(path: &Path, message: String) -> StoreError {
    let mut moved_to = PathBuf::from(format!("{}.corrupt", path.display()));
    let mut n = 1;
    while moved_to.exists() && n < 1000 {
        moved_to = PathBuf::from(format!("{}.corrupt.{n}", path.display()));
        n += 1;
    }
    tracing::error!(path = %path.display(), moved_to = %moved_to.display(), %message, "unreadable action file moved aside");
    if let Err(e) = fs::rename(path, &moved_to) {
        tracing::error!(path = %path.display(), error = %e, "cannot move the unreadable action file aside");
        return StoreError::Corrupt {
            path: path.to_owned(),
            moved_to: path.to_owned(),
            message: format!("{message}; moving it aside failed too: {e}"),
        };
    }
    if let Some(dir) = path.parent() {
        let _ = fsutil::fsync_dir(dir);
    }
    StoreError::Corrupt {
        path: path.to_owned(),
        moved_to,
        message,
    }
}
