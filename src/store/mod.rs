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
        Ok(Arc::new(State::open(&dir.join("state.sqlite"))?))
    }

    fn event_opts(cfg: &Config) -> EventStoreOptions {
        EventStoreOptions {
            block_cache_bytes: cfg.storage.block_cache_mb << 20,
            write_buffer_bytes: cfg.storage.write_buffer_mb << 20,
            sync_writes: cfg.storage.sync_writes,
            spool: cfg.spool_enabled(),
        }
    }

    pub fn open(cfg: &Config) -> Result<Stores, OpenError> {
        let dir = cfg.data_dir();
        std::fs::create_dir_all(&dir).map_err(|source| OpenError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        if let Some(free) = free_disk_mb(&dir) {
            if free < cfg.storage.min_free_disk_mb {
                return Err(OpenError::DiskFull {
                    path: dir.display().to_string(),
                    free_mb: free,
                    min_mb: cfg.storage.min_free_disk_mb,
                });
            }
        }
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
                Err(e) => return Err(e.into()),
            }
        };
        let state = State::open(&dir.join("state.sqlite"))?;
        // A clock that ran ahead (and was corrected) must not leave relays scheduled, or
        // cursors "proven", in the future: never synced again until that date.
        let slack = (cfg.sync.backoff_max_secs.max(cfg.monitor.max_backoff_secs) as i64)
            .saturating_add(FUTURE_SLACK_SECS);
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
