//! The walk against a tree that changes under it.

use super::list::{list_dir, visit};
use super::read::{read_child, read_listed};
use super::*;
use crate::fileattrs::FileKind;
use std::fs;
use std::os::unix::fs::symlink;
use std::sync::Arc;

/// `_data` with `a/secret`, and `outside/secret` (a canary) next to it.
fn volume() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("_data");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(data.join("a")).unwrap();
    fs::write(data.join("a/secret"), b"inside").unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"CANARY").unwrap();
    (tmp, data, outside)
}

fn entry(source: Source) -> Walked {
    match source {
        Source::Entry(w) => *w,
        Source::Skipped(why) => panic!("skipped: {why}"),
        Source::Unchanged(_) | Source::Deleted(_) => panic!("a delta's entry outside a delta"),
    }
}

/// Issue 7 item 5, made deterministic: `a` is listed as a directory,
/// then swapped for a symlink to outside before the lister opens it.
#[test]
fn a_directory_swapped_for_a_symlink_after_listing_is_carried_as_the_symlink() {
    let (_tmp, data, outside) = volume();
    let root = Arc::new(DirFd::open(&data).unwrap());
    let names = list_dir(&root).unwrap();
    assert_eq!(names, vec![(c"a".to_owned(), Some(FileKind::Dir))]);
    fs::rename(data.join("a"), data.join("a.real")).unwrap();
    symlink(&outside, data.join("a")).unwrap();

    let (item, descend) = visit(&root, b"p/a".to_vec(), c"a".to_owned(), Some(FileKind::Dir));
    assert!(descend.is_none(), "descended into a symlink");
    let walked = entry(read_listed(item.unwrap(), None).unwrap());
    assert_eq!(walked.meta.kind, EntryKind::Symlink);
    assert_eq!(
        walked.meta.link.as_deref(),
        Some(outside.as_os_str().as_encoded_bytes())
    );
}

/// The same after the lister opened `a`: its descriptor stays on the
/// real directory, wherever it is renamed to; the symlink put in its
/// place is never read through.
#[test]
fn a_directory_swapped_after_it_was_opened_is_read_through_its_descriptor() {
    let (_tmp, data, outside) = volume();
    let root = Arc::new(DirFd::open(&data).unwrap());
    let (_, level) = visit(&root, b"p/a".to_vec(), c"a".to_owned(), Some(FileKind::Dir));
    let mut level = level.unwrap();
    fs::rename(data.join("a"), data.join("a.real")).unwrap();
    symlink(&outside, data.join("a")).unwrap();

    let (name, kind) = level.names.next().unwrap();
    let at = At::Child {
        parent: Arc::clone(&level.dir),
        name,
        kind,
    };
    let walked = entry(
        read_listed(
            Listed {
                path: b"p/a/secret".to_vec(),
                at,
                base: None,
                tolerant: false,
            },
            None,
        )
        .unwrap(),
    );
    assert_eq!(walked.small.unwrap().0, b"inside");
}

/// A name listed as a file, then swapped for a symlink to a file
/// outside: carried as the symlink, never opened through it.
#[test]
fn a_file_swapped_for_a_symlink_is_carried_as_the_symlink() {
    let (_tmp, data, outside) = volume();
    let a = Arc::new(DirFd::open(&data.join("a")).unwrap());
    fs::remove_file(data.join("a/secret")).unwrap();
    symlink(outside.join("secret"), data.join("a/secret")).unwrap();
    let walked =
        entry(read_child(b"p".to_vec(), &a, c"secret", Some(FileKind::File), false).unwrap());
    assert_eq!(walked.meta.kind, EntryKind::Symlink);
    assert!(walked.small.is_none() && walked.large.is_none());
}

/// A name listed as a file that is a directory by the time it is read
/// (its entries were never listed): refused, not carried empty.
#[test]
fn a_file_swapped_for_a_directory_is_refused() {
    let (_tmp, data, _) = volume();
    let root = Arc::new(DirFd::open(&data).unwrap());
    let err = read_child(b"p".to_vec(), &root, c"a", Some(FileKind::File), false)
        .err()
        .unwrap();
    assert!(matches!(err, WriteError::Changed { .. }), "{err}");
    assert!(err.to_string().contains("--pause"), "{err}");
}

#[test]
fn file_bytes_counts_regular_files_and_never_follows_a_symlink() {
    let (_tmp, data, outside) = volume();
    fs::write(data.join("b"), b"12345").unwrap();
    symlink(&outside, data.join("c")).unwrap();
    assert_eq!(file_bytes(&data), "inside".len() as u64 + 5);
}
