//! Secret files kept outside the database: each role's master key and the admin token.
//!
//! Created on first start with mode 0600, written to a temporary file, fsync'd and renamed,
//! so a crash never leaves a half-written key that a restart would silently accept.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

/// A secret file problem.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// Reading or writing failed.
    #[error("secret file {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file exists but is not what we wrote.
    #[error("secret file {path}: expected {expected}")]
    Malformed {
        /// File.
        path: String,
        /// What it should hold.
        expected: &'static str,
    },
    /// Group or others can read it.
    #[error("secret file {path} has mode {mode:o}; it must not be readable by group or others (chmod 600)")]
    TooOpen {
        /// File.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SecretFileError + '_ {
    move |source| SecretFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a hex-encoded secret of `len` bytes from `path`, creating it (random, 0600) if it
/// does not exist. Returns the bytes and whether the file was created.
pub fn load_or_create_hex(
    path: &Path,
    len: usize,
) -> Result<(Zeroizing<Vec<u8>>, bool), SecretFileError> {
    match fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SecretFileError::TooOpen {
                    path: path.display().to_string(),
                    mode,
                });
            }
            let text = Zeroizing::new(fs::read_to_string(path).map_err(io(path))?);
            let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
                SecretFileError::Malformed {
                    path: path.display().to_string(),
                    expected: "lowercase hex",
                }
            })?);
            if bytes.len() != len {
                return Err(SecretFileError::Malformed {
                    path: path.display().to_string(),
                    expected: "a secret of the right length",
                });
            }
            Ok((bytes, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = Zeroizing::new(vec![0u8; len]);
            aws_lc_rs::rand::fill(&mut bytes).map_err(|_| {
                io(path)(std::io::Error::other(
                    "system random number generator failed",
                ))
            })?;
            let text = Zeroizing::new(hex::encode(&*bytes));
            write_new(path, text.as_bytes())?;
            Ok((bytes, true))
        }
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes a new file with mode 0600 atomically (tmp + fsync + rename + fsync dir).
pub fn write_new(path: &Path, contents: &[u8]) -> Result<(), SecretFileError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io(path))?;
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(path))?;
    f.write_all(contents).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("verifier.key");
        let (a, created) = load_or_create_hex(&p, 32).unwrap();
        assert!(created);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (b, created) = load_or_create_hex(&p, 32).unwrap();
        assert!(!created);
        assert_eq!(*a, *b);
    }

    #[test]
    fn readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        load_or_create_hex(&p, 32).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create_hex(&p, 32),
            Err(SecretFileError::TooOpen { .. })
        ));
    }

    #[test]
    fn wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_new(&p, b"abcd").unwrap();
        assert!(matches!(
            load_or_create_hex(&p, 32),
            Err(SecretFileError::Malformed { .. })
        ));
    }
}
