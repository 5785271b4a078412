//! Writing the released key where systemd-cryptsetup picks it up.
//!
//! The key appears at its final path only complete and only readable by root: it is written
//! to a temporary file created with mode 0400 in the same directory (so no other mode ever
//! exists, even briefly), synced, then renamed over the target, and the directory is synced.
//! A crash leaves either no key or the whole key, never a truncated one that cryptsetup would
//! try and fail with.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The key file could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The path has no parent directory or file name.
    #[error("key file path {} must name a file in a directory", .0.display())]
    BadPath(PathBuf),
    /// A file system operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> KeyFileError + 'a {
    move |source| KeyFileError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `key` to `path` atomically with mode 0400, creating missing parent directories
/// with mode 0700.
pub fn write_key_file(path: &Path, key: &[u8]) -> Result<(), KeyFileError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(KeyFileError::BadPath(path.to_path_buf()));
    };
    if dir.as_os_str().is_empty() {
        return Err(KeyFileError::BadPath(path.to_path_buf()));
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create directory", dir))?;

    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    // A leftover from a crashed run of this same pid is impossible in practice, but one from
    // an earlier boot's tmpfs cannot exist either; remove whatever is there so create_new
    // (which refuses to follow a planted symlink) can succeed.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove stale", &tmp)(e)),
    }
    let result = write_tmp(&tmp, key)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io("rename into place", path)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable (matters on a persistent file system only; /run is
    // tmpfs, where this is cheap).
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync directory", dir))
}

fn write_tmp(tmp: &Path, key: &[u8]) -> Result<(), KeyFileError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(tmp)
        .map_err(io("create", tmp))?;
    f.write_all(key).map_err(io("write", tmp))?;
    f.sync_all().map_err(io("sync", tmp))
}

/// Removes the key file (when a later step fails and the key must not be used).
pub fn remove_key_file(path: &Path) -> Result<(), KeyFileError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", path)(e)),
    }
}
