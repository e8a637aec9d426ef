//! The node's identity key (secp256k1, used for NIP-42 AUTH and, later, signed observations).
//!
//! Invariant 7: secrets come from the environment or a file, never from config.toml, and never
//! appear in logs. Lookup order: `BIGBROTR_NODE_KEY` (hex or nsec), then the key file
//! (`[node] key_file`, default `<data_dir>/node.key`). `bigbrotr init` creates the file with mode
//! 0600 when neither exists; the file is written to a temporary name and renamed, so a crash never
//! leaves a half-written key behind.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nostr::Keys;

pub const ENV_NODE_KEY: &str = "BIGBROTR_NODE_KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{ENV_NODE_KEY} is set but is not a valid secret key (64 hex characters or nsec1...)")]
    BadEnv,
    #[error("node key file {0} does not hold a valid secret key (64 hex characters or nsec1...); restore it or delete it and run `bigbrotr init`")]
    BadFile(String),
    #[error("no node key: set {ENV_NODE_KEY} or run `bigbrotr init` to create {0}")]
    Missing(String),
    #[error("node key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("node key file {0} is readable by other users; run `chmod 600 {0}`")]
    Permissions(String),
}

/// Load the node key from the environment or the key file.
pub fn load(key_file: &Path) -> Result<Keys, KeyError> {
    if let Ok(v) = std::env::var(ENV_NODE_KEY) {
        return Keys::parse(v.trim()).map_err(|_| KeyError::BadEnv);
    }
    let shown = key_file.display().to_string();
    let meta = match std::fs::metadata(key_file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(KeyError::Missing(shown)),
        Err(source) => {
            return Err(KeyError::Io {
                path: shown,
                source,
            })
        }
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyError::Permissions(shown));
    }
    let text = std::fs::read_to_string(key_file).map_err(|source| KeyError::Io {
        path: shown.clone(),
        source,
    })?;
    Keys::parse(text.trim()).map_err(|_| KeyError::BadFile(shown))
}

/// Load the key, or create the key file if there is neither an environment key nor a file.
/// Returns the keys and whether a new file was written.
pub fn load_or_create(key_file: &Path) -> Result<(Keys, bool), KeyError> {
    match load(key_file) {
        Err(KeyError::Missing(_)) => {}
        other => return other.map(|k| (k, false)),
    }
    let keys = Keys::generate();
    let io = |source| KeyError::Io {
        path: key_file.display().to_string(),
        source,
    };
    if let Some(dir) = key_file.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = key_file.with_extension("key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(format!("{}\n", keys.secret_key().to_secret_hex()).as_bytes())
        .map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, key_file).map_err(io)?;
    // The rename is durable only once the directory is: a power cut could otherwise bring back
    // no key file, and the next start would make a new identity.
    if let Some(dir) = key_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok((keys, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_load_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/node.key");
        let (k1, created) = load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (k2, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(k1.public_key(), k2.public_key());
    }

    #[test]
    fn loose_permissions_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        std::fs::write(&path, "not a key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(load(&path), Err(KeyError::BadFile(_))));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(&path), Err(KeyError::Permissions(_))));
        assert!(matches!(
            load(&dir.path().join("none")),
            Err(KeyError::Missing(_))
        ));
    }
}
