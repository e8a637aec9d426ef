//! The Seeder: registers the seed relays (the embedded `seed_relays.txt` or `[seeder] file`).
//! Lines are URLs; `#` starts a comment; a bad line is reported by number and skipped.

use crate::config::{Config, EMBEDDED_SEEDS};
use crate::protocol::url::parse_relay_url;
use crate::store::{StateError, Stores};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read seed file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SeedRun {
    pub added: usize,
    pub skipped: usize,
}

pub fn seed(cfg: &Config, stores: &Stores) -> Result<SeedRun, SeedError> {
    let text = match cfg.seed_file() {
        Some(p) => std::fs::read_to_string(&p).map_err(|source| SeedError::Read {
            path: p.display().to_string(),
            source,
        })?,
        None => EMBEDDED_SEEDS.to_string(),
    };
    let policy = cfg.network.url_policy();
    let mut run = SeedRun::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match parse_relay_url(line, &policy) {
            Ok(url) => {
                if stores.state.add_relay(&url, "seed")?.1 {
                    run.added += 1;
                }
            }
            Err(e) => {
                run.skipped += 1;
                tracing::warn!(line = n + 1, error = %e, "seed relay skipped");
            }
        }
    }
    Ok(run)
}
