//! Embedded storage: RocksDB for events (high write rate, dedup by id, time index, spool) and
//! SQLite for relational state (registry, cursors, service state).
//!
//! Both live under `[node] data_dir`: `events/` (RocksDB) and `state.sqlite`. [`Stores::open`]
//! checks free disk first (invariant 4) so a full disk is a clear start-up error, not a crash
//! in the middle of a write.

pub mod events;
pub mod health;
pub mod state;

use std::path::Path;
use std::sync::Arc;

pub use events::{EventStore, EventStoreOptions, StoreError, WriteStats};
pub use state::{Cursor, State, StateError};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("only {free_mb} MiB free on the disk holding {path}, below storage.min_free_disk_mb = {min_mb}; free some space or lower the setting")]
    DiskFull {
        path: String,
        free_mb: u64,
        min_mb: u64,
    },
    /// Another process holds the event store (RocksDB allows one writer).
    #[error("another bigbrotr process (run, sync, ship or serve) is using the data dir {path}; stop it first, or use the commands that read beside it (status, events export, relays list). To serve while syncing, set [serve] enabled = true in the config of `bigbrotr run`")]
    Busy { path: String },
    #[error(transparent)]
    Events(#[from] StoreError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// The two stores of a node, shared by its services.
#[derive(Clone)]
pub struct Stores {
    pub events: Arc<EventStore>,
    pub state: Arc<State>,
}

impl Stores {
    /// Open for reading beside a running node (status, export). Creates the stores first if
    /// this is a fresh data dir, so the answer is "empty", not an error.
    pub fn open_read_only(cfg: &Config) -> Result<Stores, OpenError> {
        let dir = cfg.data_dir();
        let mut tries = 0;
        let events = loop {
            if dir.join("events").join("CURRENT").exists() {
                break EventStore::open_read_only(&dir.join("events"), &Self::event_opts(cfg))?;
            }
            match Self::open(cfg) {
                Ok(stores) => return Ok(stores),
                // Another process is creating the store right now: read it once it exists.
                Err(OpenError::Events(_)) if tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        };
        let state = State::open(&dir.join("state.sqlite"))?;
        Ok(Stores {
            events: Arc::new(events),
            state: Arc::new(state),
        })
    }

    /// Open only the SQLite state (registry commands need no RocksDB lock).
    pub fn open_state(cfg: &Config) -> Result<Arc<State>, OpenError> {
        let dir = cfg.data_dir();
        std::fs::create_dir_all(&dir).map_err(|source| OpenError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let state = State::open(&dir.join("state.sqlite"))?;
        // Registry commands register relays: the ids the event store refers to must be taken
        // first (read-only: a running node may hold the store).
        if dir.join("events").join("CURRENT").exists() {
            let events = EventStore::open_read_only(&dir.join("events"), &Self::event_opts(cfg))?;
            reconcile_relays(&events, &state)?;
        }
        Ok(Arc::new(state))
    }

    pub fn event_opts(cfg: &Config) -> EventStoreOptions {
        EventStoreOptions {
            block_cache_bytes: cfg.storage.block_cache_mb << 20,
            write_buffer_bytes: cfg.storage.write_buffer_mb << 20,
            sync_writes: cfg.storage.sync_writes,
            spool: cfg.spool_enabled(),
            track_shipped: cfg
                .storage
                .shipped_retention(cfg.upstream.enabled())
                .is_some(),
        }
    }

    /// Refuse work that writes when the data dir's disk is below `storage.min_free_disk_mb`.
    pub fn check_free_disk(cfg: &Config) -> Result<(), OpenError> {
        let dir = cfg.data_dir();
        match free_disk_mb(&dir) {
            Some(free) if free < cfg.storage.min_free_disk_mb => Err(OpenError::DiskFull {
                path: dir.display().to_string(),
                free_mb: free,
                min_mb: cfg.storage.min_free_disk_mb,
            }),
            _ => Ok(()),
        }
    }

    pub fn open(cfg: &Config) -> Result<Stores, OpenError> {
        let dir = cfg.data_dir();
        std::fs::create_dir_all(&dir).map_err(|source| OpenError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        Self::check_free_disk(cfg)?;
        // Another command may hold the RocksDB lock for a moment (`status` creating a fresh
        // store just as `run` starts): wait up to 5 s before giving up.
        let mut tries = 0;
        let events = loop {
            match EventStore::open(&dir.join("events"), &Self::event_opts(cfg)) {
                Ok(e) => break e,
                Err(e) if tries < 50 && e.to_string().contains("lock file") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) if e.to_string().contains("lock file") => {
                    return Err(OpenError::Busy {
                        path: dir.display().to_string(),
                    })
                }
                Err(e) => return Err(e.into()),
            }
        };
        let state = State::open(&dir.join("state.sqlite"))?;
        // A clock that ran ahead (and was corrected) must not leave relays scheduled, or
        // cursors "proven", in the future: never synced again until that date.
        let slack = (cfg.sync.backoff_max_secs.max(cfg.monitor.max_backoff_secs) as i64)
            .saturating_add(FUTURE_SLACK_SECS);
        reconcile_relays(&events, &state)?;
        let reset = state.repair_future_times(state::now(), slack)?;
        if reset > 0 {
            tracing::warn!(
                relays = reset,
                "sync cursors lay in the future (the clock ran ahead); their history is checked again"
            );
        }
        Ok(Stores {
            events: Arc::new(events),
            state: Arc::new(state),
        })
    }
}

/// Make the registry agree with the relay ids the event store refers to. An older
/// `state.sqlite` (a restored backup, a card cloned mid-write) lacks relays registered after it
/// was taken: SQLite would hand their ids to the next new URLs, and sightings already stored
/// would then name the wrong relay, here and upstream. Each missing id is registered again
/// under its URL (it is synced again from the start; dedup makes that cheap). An id that
/// names another URL means the two stores are not from the same data dir: a clear error.
fn reconcile_relays(events: &EventStore, state: &State) -> Result<(), OpenError> {
    // A store made before bindings existed: bind what the registry says was synced.
    if events.bound_relays().is_empty() {
        for (id, url) in state.synced_relays()? {
            events.bind_relay(id, &url)?;
        }
    }
    let mut restored = 0usize;
    for (id, url) in events.bound_relays() {
        let registered = state.relay_by_id(id)?;
        match registered {
            Some(row) if row.url == url => {}
            Some(row) => {
                return Err(StoreError::RelayMismatch {
                    id,
                    registry: row.url,
                    events: url,
                }
                .into())
            }
            None => {
                let parsed = crate::protocol::url::normalize(&url).ok();
                let put_back = match &parsed {
                    Some(u) => state.restore_relay(id, u)?,
                    None => false,
                };
                if !put_back {
                    // The URL sits under another id (or no longer parses): not one lineage.
                    let registry = match &parsed {
                        Some(u) => match state.relay_id(u)? {
                            Some(other) => format!("missing (its URL is registered as id {other})"),
                            None => "missing".to_string(),
                        },
                        None => "missing (the URL no longer parses)".to_string(),
                    };
                    return Err(StoreError::RelayMismatch {
                        id,
                        registry,
                        events: url,
                    }
                    .into());
                }
                restored += 1;
            }
        }
    }
    if restored > 0 {
        tracing::warn!(
            relays = restored,
            "state.sqlite is older than the event store (restored from a backup?): relays it lacked were registered again under their ids and will be synced again"
        );
    }
    Ok(())
}

/// How far beyond the longest configured backoff a stored time may lie before it is treated
/// as written by a clock that ran ahead (the check intervals are all shorter than a day).
const FUTURE_SLACK_SECS: i64 = 2 * 86_400;

/// Free space on the filesystem holding `path`, MiB (`None` if it cannot be determined).
pub fn free_disk_mb(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| (st.f_bavail as u64).saturating_mul(st.f_frsize as u64) >> 20)
}
