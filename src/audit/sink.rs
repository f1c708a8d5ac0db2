//! The writer thread's sink: standard output, or a file that follows its
//! path.
//!
//! A file sink reopens its path when asked (SIGHUP, `POST /admin/reload`)
//! and, at most once a second, when the path no longer names the file it
//! has open: logrotate renamed it away (another inode, or no file at all),
//! so the next events go to a new file at the configured path rather than
//! to the rotated one. `copytruncate` needs nothing: the file is opened for
//! appending. A path that cannot be opened (its directory is gone) makes
//! writes fail, which the caller counts as an outage; it is tried again at
//! every write, so the outage ends as soon as the path can be opened.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a file sink checks that its path still names its file: a
/// `stat` a second is cheap, and a rotation is noticed within a second.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Where the writer thread writes.
#[derive(Debug)]
pub(super) enum Sink {
    /// Standard output.
    Stdout(std::io::Stdout),
    /// A file that follows its path.
    File(FollowedFile),
}

impl Sink {
    /// Writes `bytes` in one call and flushes.
    pub(super) fn write_batch(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(out) => out.write_all(bytes).and_then(|()| out.flush()),
            Sink::File(file) => file.write_batch(bytes),
        }
    }

    /// Reopens a file sink's path before its next write.
    pub(super) fn reopen(&mut self) {
        if let Sink::File(file) = self {
            file.open = None;
        }
    }
}

/// A file opened for appending, with the identity it had when opened.
#[derive(Debug)]
pub(super) struct FollowedFile {
    path: PathBuf,
    /// `None` after a reopen request or a failed open: opened at the next write.
    open: Option<(File, Identity)>,
    checked: Instant,
}

/// A file's device and inode: what tells a renamed-away file from its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}

impl FollowedFile {
    /// Opens `path` (created if missing) for appending: a failure here is a
    /// start-up error, so a wrong path is found before any event is lost.
    pub(super) fn open(path: &Path) -> std::io::Result<Self> {
        let opened = open(path)?;
        Ok(Self {
            path: path.to_owned(),
            open: Some(opened),
            checked: Instant::now(),
        })
    }

    fn write_batch(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.checked.elapsed() >= CHECK_EVERY {
            self.checked = Instant::now();
            if let Some((_, identity)) = &self.open {
                let current = std::fs::metadata(&self.path).map(|m| Identity::of(&m));
                if current.ok() != Some(*identity) {
                    tracing::info!(path = %self.path.display(), "the audit file was rotated away; reopening its path");
                    self.open = None;
                }
            }
        }
        let file = match &mut self.open {
            Some((file, _)) => file,
            None => {
                let opened = open(&self.path)?;
                &mut self.open.insert(opened).0
            }
        };
        // One append per batch; a File has no buffer, so no flush is needed.
        let written = file.write_all(bytes);
        if written.is_err() {
            // Reopened at the next write: a file removed with its directory
            // comes back once the path can be opened again.
            self.open = None;
        }
        written
    }
}

fn open(path: &Path) -> std::io::Result<(File, Identity)> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let identity = Identity::of(&file.metadata()?);
    Ok((file, identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("warden-audit-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn a_rotated_file_is_followed_by_a_new_one_at_the_path() {
        let dir = temp_dir();
        let path = dir.join("audit.log");
        let mut sink = FollowedFile::open(&path).expect("open");
        sink.write_batch(b"one\n").expect("write");
        std::fs::rename(&path, dir.join("audit.log.1")).expect("rotate");
        // The check is due.
        sink.checked -= CHECK_EVERY;
        sink.write_batch(b"two\n").expect("write");
        assert_eq!(
            std::fs::read_to_string(dir.join("audit.log.1"))
                .ok()
                .as_deref(),
            Some("one\n")
        );
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("two\n")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reopen_request_opens_the_path_at_the_next_write_without_waiting_for_the_check() {
        let dir = temp_dir();
        let path = dir.join("audit.log");
        let mut sink = Sink::File(FollowedFile::open(&path).expect("open"));
        sink.write_batch(b"one\n").expect("write");
        std::fs::rename(&path, dir.join("audit.log.1")).expect("rotate");
        sink.reopen();
        sink.write_batch(b"two\n").expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("two\n")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_path_that_cannot_be_opened_fails_until_it_can() {
        let dir = temp_dir();
        let path = dir.join("audit.log");
        let mut sink = FollowedFile::open(&path).expect("open");
        std::fs::remove_dir_all(&dir).expect("remove the directory");
        sink.checked -= CHECK_EVERY;
        assert!(sink.write_batch(b"lost\n").is_err());
        assert!(sink.write_batch(b"lost\n").is_err(), "still no directory");
        std::fs::create_dir_all(&dir).expect("recreate");
        sink.write_batch(b"back\n")
            .expect("written once the path opens");
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("back\n")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
