//! The snapshot on disk: written atomically (a crash mid-write leaves the previous file whole),
//! and read at start-up with every failure turned into an outcome the tracker can start from: a
//! file that cannot be restored is renamed aside (kept for a human to look at) and the tracker
//! starts empty rather than refusing to start or overwriting the evidence at the next snapshot.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::snapshot::{decode, Snapshot, FILE_NAME};

/// How many `.bad.N` names are tried before giving up on finding a free one.
const BAD_NAMES: u32 = 1000;

/// Writes `bytes` to `dir/name` atomically: `dir/.name.tmp`, write_all, fsync, rename over
/// `name`, fsync `dir`. Errors carry the path (io::Error with context message, or anyhow).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let written = write_synced(&tmp, bytes);
    if written.is_err() {
        // A half-written temporary is worth nothing; the next snapshot recreates it anyway.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()));
    }
    // The rename is only durable once the directory entry is on disk.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    // Owner-only: the snapshot holds the connection-id key.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {} bytes to {}", bytes.len(), path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

/// What reading a snapshot at start-up found.
#[derive(Debug)]
pub enum Loaded {
    Missing,
    Restored(Snapshot),
    MovedAside { reason: String, to: PathBuf },
}

/// Reads `dir/FILE_NAME`: missing → Missing; a directory, unreadable, empty, truncated,
/// corrupt, foreign or newer-version file → renamed to `swarm.snap.bad` (or `.bad.1`, `.bad.2`..
/// if taken; if even the rename fails, say so in the reason) and MovedAside with the reason
/// (e.g. "checksum mismatch: stored 0x.., computed 0x.."). Never panics.
pub fn load(dir: &Path) -> Loaded {
    let path = dir.join(FILE_NAME);
    let reason = match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => format!("{}: cannot inspect it: {e}", path.display()),
        Ok(meta) if meta.is_dir() => format!("{} is a directory, not a file", path.display()),
        Ok(_) => match fs::read(&path) {
            Err(e) => format!("{}: cannot read it: {e}", path.display()),
            Ok(bytes) => match decode(&bytes) {
                Ok(snapshot) => return Loaded::Restored(snapshot),
                Err(e) => format!("{}: {e}", path.display()),
            },
        },
    };
    move_aside(dir, &path, reason)
}

fn move_aside(dir: &Path, path: &Path, reason: String) -> Loaded {
    let Some(to) = free_bad_name(dir) else {
        let to = dir.join(format!("{FILE_NAME}.bad"));
        return Loaded::MovedAside {
            reason: format!(
                "{reason}; not moved aside: {FILE_NAME}.bad to {FILE_NAME}.bad.{} are all taken",
                BAD_NAMES - 1
            ),
            to,
        };
    };
    match fs::rename(path, &to) {
        Ok(()) => Loaded::MovedAside { reason, to },
        Err(e) => Loaded::MovedAside {
            reason: format!("{reason}; moving it aside to {} failed: {e}", to.display()),
            to,
        },
    }
}

/// The first of `swarm.snap.bad`, `.bad.1`, `.bad.2`.. that does not exist: an earlier bad file
/// is kept, never replaced.
fn free_bad_name(dir: &Path) -> Option<PathBuf> {
    (0..BAD_NAMES)
        .map(|n| match n {
            0 => dir.join(format!("{FILE_NAME}.bad")),
            n => dir.join(format!("{FILE_NAME}.bad.{n}")),
        })
        // A name that cannot even be inspected is tried: the rename then says why it failed.
        .find(|p| fs::symlink_metadata(p).is_err())
}

#[cfg(test)]
mod tests {
    use super::super::snapshot::{encode_file, Header, PeerRecord, SectionWriter, VERSION};
    use super::*;

    fn header() -> Header {
        Header {
            written_unix: 1_790_000_000,
            clock_origin_unix: 1_789_990_000,
            connection_key: *b"0123456789abcdef",
        }
    }

    /// A valid file: two torrents, one IPv4 and one IPv6 peer, one torrent kept without peers.
    fn valid_file() -> Vec<u8> {
        let mut w = SectionWriter::new();
        w.torrent(&[7; 20], 3, 0, 1, 1);
        w.peer_v4(&PeerRecord {
            ip: [10, 0, 0, 1],
            port: 6881,
            seeder: true,
            counted: true,
            ttl_secs: 1200,
        });
        w.peer_v6(&PeerRecord {
            ip: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            port: 51413,
            seeder: false,
            counted: false,
            ttl_secs: 1,
        });
        w.torrent(&[9; 20], 40, 3600, 0, 0);
        let mut out = Vec::new();
        encode_file(&header(), &[w.as_bytes()], &mut out);
        out
    }

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("a temporary directory")
    }

    /// Names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn atomic_write_replaces_old_content_and_leaves_no_temporary() {
        let d = dir();
        write_atomic(d.path(), FILE_NAME, b"the first, longer content").unwrap();
        write_atomic(d.path(), FILE_NAME, b"second").unwrap();
        assert_eq!(fs::read(d.path().join(FILE_NAME)).unwrap(), b"second");
        assert_eq!(names(d.path()), [FILE_NAME]);
    }

    #[test]
    fn atomic_write_into_a_missing_directory_names_the_path() {
        let d = dir();
        let missing = d.path().join("not-there");
        let e = write_atomic(&missing, FILE_NAME, b"x").unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains(&missing.join(".swarm.snap.tmp").display().to_string()),
            "{text}"
        );
    }

    #[test]
    fn atomic_write_then_load_restores_the_snapshot() {
        let d = dir();
        write_atomic(d.path(), FILE_NAME, &valid_file()).unwrap();
        match load(d.path()) {
            Loaded::Restored(s) => {
                assert_eq!(s.header, header());
                assert_eq!(s.torrents.len(), 2);
                assert_eq!(s.torrents[0].v4[0].port, 6881);
                assert_eq!(s.torrents[0].v6[0].port, 51413);
                assert_eq!(
                    (s.torrents[1].downloaded, s.torrents[1].keep_secs),
                    (40, 3600)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            names(d.path()),
            [FILE_NAME],
            "a good file stays where it is"
        );
    }

    #[test]
    fn load_of_a_missing_file_is_missing() {
        let d = dir();
        assert!(matches!(load(d.path()), Loaded::Missing));
        assert!(names(d.path()).is_empty());
    }

    /// Writes `bytes` as the snapshot, loads, and checks it was moved to `swarm.snap.bad` with
    /// its bytes unchanged and a reason holding `expect`.
    fn moved_aside(bytes: &[u8], expect: &str) {
        let d = dir();
        fs::write(d.path().join(FILE_NAME), bytes).unwrap();
        match load(d.path()) {
            Loaded::MovedAside { reason, to } => {
                assert!(reason.contains(expect), "{reason:?} lacks {expect:?}");
                assert_eq!(to, d.path().join("swarm.snap.bad"));
                assert_eq!(fs::read(&to).unwrap(), bytes, "the original bytes kept");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(names(d.path()), ["swarm.snap.bad"]);
    }

    #[test]
    fn load_of_an_empty_file_moves_it_aside() {
        moved_aside(b"", "the file is empty");
    }

    #[test]
    fn load_of_a_truncated_file_moves_it_aside() {
        let f = valid_file();
        moved_aside(&f[..f.len() - 1], "truncated: the file ends at byte");
        moved_aside(&f[..30], "truncated: the file ends at byte 30");
    }

    #[test]
    fn load_of_a_flipped_byte_moves_it_aside() {
        let mut f = valid_file();
        f[70] ^= 0x10;
        moved_aside(&f, "checksum mismatch: stored 0x");
    }

    #[test]
    fn load_of_a_foreign_file_moves_it_aside() {
        moved_aside(
            b"[tracker]\nudp = \"0.0.0.0:6969\"\n",
            "not a hayate swarm snapshot",
        );
    }

    #[test]
    fn load_of_a_newer_version_moves_it_aside() {
        let mut f = valid_file();
        f[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        moved_aside(
            &f,
            &format!(
                "format version {}, this build reads up to {VERSION}",
                VERSION + 1
            ),
        );
    }

    #[test]
    fn load_of_a_directory_moves_it_aside() {
        let d = dir();
        fs::create_dir(d.path().join(FILE_NAME)).unwrap();
        fs::write(d.path().join(FILE_NAME).join("inside"), b"kept").unwrap();
        match load(d.path()) {
            Loaded::MovedAside { reason, to } => {
                assert!(reason.contains("is a directory"), "{reason}");
                assert_eq!(to, d.path().join("swarm.snap.bad"));
                assert_eq!(fs::read(to.join("inside")).unwrap(), b"kept");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(names(d.path()), ["swarm.snap.bad"]);
    }

    #[test]
    fn load_never_replaces_an_earlier_bad_file() {
        let d = dir();
        fs::write(d.path().join("swarm.snap.bad"), b"first").unwrap();
        fs::write(d.path().join("swarm.snap.bad.1"), b"second").unwrap();
        fs::write(d.path().join(FILE_NAME), b"third").unwrap();
        match load(d.path()) {
            Loaded::MovedAside { to, .. } => assert_eq!(to, d.path().join("swarm.snap.bad.2")),
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read(d.path().join("swarm.snap.bad")).unwrap(), b"first");
        assert_eq!(
            fs::read(d.path().join("swarm.snap.bad.1")).unwrap(),
            b"second"
        );
        assert_eq!(
            fs::read(d.path().join("swarm.snap.bad.2")).unwrap(),
            b"third"
        );
        assert_eq!(
            names(d.path()),
            ["swarm.snap.bad", "swarm.snap.bad.1", "swarm.snap.bad.2"]
        );
    }

    /// The file vanished (or the directory turned read-only) between reading and renaming:
    /// the reason says the move failed, and where it was going.
    #[test]
    fn a_failed_move_aside_is_in_the_reason() {
        let d = dir();
        match move_aside(d.path(), &d.path().join("vanished"), "corrupt".to_string()) {
            Loaded::MovedAside { reason, to } => {
                assert_eq!(to, d.path().join("swarm.snap.bad"));
                assert!(
                    reason.starts_with("corrupt; moving it aside to ")
                        && reason.contains("swarm.snap.bad failed: "),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(names(d.path()).is_empty());
    }
}
