//! Which torrents the tracker serves: every torrent (`off`), only the listed ones (`allow`), or
//! all but the listed ones (`deny`). The list is a file of hex info hashes, one per line, with
//! `#` comments and blank lines. It is parsed whole before it is used, so a bad file never
//! half-applies; errors name the file and the line.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use crate::protocol::{parse_hex_hash, InfoHash};

/// What the list means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every torrent is served; no file is read.
    #[default]
    Off,
    /// Only the listed torrents are served.
    Allow,
    /// Every torrent but the listed ones is served.
    Deny,
}

/// What an announce of a refused torrent is told (UDP error packet, HTTP `failure reason`).
pub const REFUSED_MESSAGE: &str = "torrent not allowed";

/// A parsed list. Cheap to test a hash against: one hash-set lookup, none when off.
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    mode: Mode,
    hashes: HashSet<InfoHash, ahash::RandomState>,
}

/// A list file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum AccessListError {
    #[error("cannot read access list {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("access list {file}, line {line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
}

impl AccessList {
    /// Serves every torrent.
    pub fn off() -> AccessList {
        AccessList::default()
    }

    /// Reads the list at `path` for `mode`; with mode `off` nothing is read.
    pub fn load(mode: Mode, path: &Path) -> Result<AccessList, AccessListError> {
        if mode == Mode::Off {
            return Ok(AccessList::off());
        }
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AccessListError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(mode, &text, &file)
    }

    /// Parses list text (named `file` in errors).
    pub fn parse(mode: Mode, text: &str, file: &str) -> Result<AccessList, AccessListError> {
        let mut hashes = HashSet::with_hasher(ahash::RandomState::new());
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let hash = parse_hex_hash(line).map_err(|message| AccessListError::Line {
                file: file.to_string(),
                line: i + 1,
                message,
            })?;
            hashes.insert(hash);
        }
        Ok(AccessList { mode, hashes })
    }

    /// Whether the tracker serves this torrent.
    #[inline]
    pub fn allows(&self, info_hash: &InfoHash) -> bool {
        match self.mode {
            Mode::Off => true,
            Mode::Allow => self.hashes.contains(info_hash),
            Mode::Deny => !self.hashes.contains(info_hash),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Hashes listed (0 when off).
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef01234567";
    const B: &str = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF";

    fn hash(s: &str) -> InfoHash {
        parse_hex_hash(s).unwrap()
    }

    #[test]
    fn comments_blank_lines_and_case() {
        let text = format!("# torrents we host\n\n{A}  # the first\n   {B}\n\n");
        let l = AccessList::parse(Mode::Allow, &text, "l").unwrap();
        assert_eq!(l.len(), 2);
        assert!(l.allows(&hash(A)) && l.allows(&[0xff; 20]));
        assert!(!l.allows(&[0; 20]));
        let d = AccessList::parse(Mode::Deny, &text, "l").unwrap();
        assert!(!d.allows(&hash(A)) && d.allows(&[0; 20]));
        assert_eq!(hash(A)[0], 0x01);
        assert_eq!(hash(A)[19], 0x67);
    }

    #[test]
    fn off_allows_everything_and_reads_nothing() {
        let l = AccessList::load(Mode::Off, Path::new("/nonexistent/list")).unwrap();
        assert!(l.allows(&[7; 20]) && l.is_empty());
    }

    #[test]
    fn a_bad_line_is_named() {
        for (bad, why) in [
            ("abc", "40 hex digits"),
            (
                "zz23456789abcdef0123456789abcdef01234567",
                "not hexadecimal",
            ),
            ("0123456789abcdef0123456789abcdef012345678", "41 characters"),
        ] {
            let text = format!("# ok\n{A}\n{bad}\n");
            let e = AccessList::parse(Mode::Deny, &text, "list.txt")
                .unwrap_err()
                .to_string();
            assert!(e.contains("list.txt, line 3"), "{e}");
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = AccessList::load(Mode::Allow, Path::new("/nonexistent/list"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/list"), "{e}");
    }
}
