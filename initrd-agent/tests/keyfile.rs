//! The key file: mode 0400 from birth, complete or absent, parents created 0700.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use initrd_agent::keyfile::{remove_key_file, write_key_file, KeyFileError};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn written_0400_in_a_fresh_0700_directory() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("run/cryptsetup-keys.d");
    let path = keys.join("root.key");
    write_key_file(&path, b"secret key bytes").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"secret key bytes");
    assert_eq!(mode(&path), 0o400);
    assert_eq!(mode(&keys), 0o700);
    assert_eq!(mode(&dir.path().join("run")), 0o700);
    // Nothing else is left in the directory (no temporary file).
    let names: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("root.key")]);
}

#[test]
fn replaces_an_existing_key_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.key");
    write_key_file(&path, b"old").unwrap();
    let old_ino = std::fs::metadata(&path).unwrap().ino();
    write_key_file(&path, b"new key").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new key");
    assert_eq!(mode(&path), 0o400);
    // A new inode renamed over the old one, never the old file rewritten in place.
    assert_ne!(std::fs::metadata(&path).unwrap().ino(), old_ino);
    remove_key_file(&path).unwrap();
    assert!(!path.exists());
    remove_key_file(&path).unwrap();
}

#[test]
fn a_planted_symlink_at_the_temporary_name_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"untouched").unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let tmp = keys.join(format!(".root.key.tmp.{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    write_key_file(&keys.join("root.key"), b"k").unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    assert_eq!(std::fs::read(keys.join("root.key")).unwrap(), b"k");
    assert!(!tmp.exists());
}

#[test]
fn failures_leave_no_key_and_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let path = blocker.join("root.key");
    let e = write_key_file(&path, b"k").unwrap_err();
    assert!(matches!(e, KeyFileError::Io { .. }));
    assert!(e.to_string().contains("file"), "{e}");
    assert!(matches!(
        write_key_file(std::path::Path::new("/"), b"k"),
        Err(KeyFileError::BadPath(_))
    ));
}
