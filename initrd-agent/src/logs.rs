//! The measurement logs that explain the quoted PCRs: the UEFI event log and the IMA list.
//!
//! Both come from securityfs, whose files report a size of 0, so they are read to the end
//! through a bound (the protocol's own limit) rather than by their metadata.

use std::io::Read;
use std::path::{Path, PathBuf};

use verifier_core::proto::v1::{ImaLog, ImaLogFormat, MAX_EVENT_LOG, MAX_IMA_LOG};
use verifier_core::proto::Base64Bytes;
use verifier_core::wire::HashAlg;

/// A log file exists but could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// Reading failed (permissions, I/O).
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// Which log.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Larger than the protocol accepts; the server would refuse the request.
    #[error("{what} {} is larger than the protocol's limit of {max} bytes", path.display())]
    TooLarge {
        /// Which log.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
}

/// Reads a whole file of at most `max` bytes; `None` when it does not exist or is empty
/// (no TPM event log support, IMA off).
pub fn read_bounded(
    path: &Path,
    max: usize,
    what: &'static str,
) -> Result<Option<Vec<u8>>, LogError> {
    let read_err = |source| LogError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let mut data = Vec::new();
    file.take(limit).read_to_end(&mut data).map_err(read_err)?;
    if data.len() > max {
        return Err(LogError::TooLarge {
            what,
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(if data.is_empty() { None } else { Some(data) })
}

/// The UEFI event log (`binary_bios_measurements`), when the platform has one.
pub fn read_event_log(path: &Path) -> Result<Option<Vec<u8>>, LogError> {
    read_bounded(path, MAX_EVENT_LOG, "UEFI event log")
}

/// The IMA list, when IMA is on. The file name tells the format (`ascii_*` or binary) and
/// the template hash (`*_sha256` etc.; the classic files without suffix use SHA-1).
pub fn read_ima_log(path: &Path) -> Result<Option<ImaLog>, LogError> {
    let Some(data) = read_bounded(path, MAX_IMA_LOG, "IMA measurement list")? else {
        return Ok(None);
    };
    let (format, template_hash_alg) = ima_file_kind(path);
    Ok(Some(ImaLog {
        format,
        template_hash_alg,
        data: Base64Bytes::new(data),
    }))
}

/// Format and template hash algorithm of an IMA list, from its securityfs file name.
pub fn ima_file_kind(path: &Path) -> (ImaLogFormat, HashAlg) {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let format = if name.starts_with("ascii") {
        ImaLogFormat::Ascii
    } else {
        ImaLogFormat::Binary
    };
    let alg = name
        .rsplit_once('_')
        .and_then(|(_, suffix)| HashAlg::from_name(suffix))
        .unwrap_or(HashAlg::Sha1);
    (format, alg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ima_kinds_follow_securityfs_names() {
        let k = |n: &str| ima_file_kind(Path::new(n));
        assert_eq!(
            k("/sys/kernel/security/ima/binary_runtime_measurements"),
            (ImaLogFormat::Binary, HashAlg::Sha1)
        );
        assert_eq!(
            k("/x/binary_runtime_measurements_sha256"),
            (ImaLogFormat::Binary, HashAlg::Sha256)
        );
        assert_eq!(
            k("/x/ascii_runtime_measurements_sha384"),
            (ImaLogFormat::Ascii, HashAlg::Sha384)
        );
    }

    #[test]
    fn missing_and_empty_are_absent_oversize_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_bounded(&dir.path().join("nope"), 4, "x")
            .unwrap()
            .is_none());
        let p = dir.path().join("f");
        std::fs::write(&p, b"").unwrap();
        assert!(read_bounded(&p, 4, "x").unwrap().is_none());
        std::fs::write(&p, b"1234").unwrap();
        assert_eq!(read_bounded(&p, 4, "x").unwrap().unwrap(), b"1234");
        std::fs::write(&p, b"12345").unwrap();
        assert!(matches!(
            read_bounded(&p, 4, "x"),
            Err(LogError::TooLarge { max: 4, .. })
        ));
    }
}
