//! Which BitTorrent clients may announce, by peer_id prefix (chihaya's `clientapproval`): every
//! client (`off`), only clients whose peer_id starts with a listed prefix (`allow`), or all but
//! those (`deny`). Prefixes name a client and usually its version: Azureus style `-qB4`
//! (`-`, two letters, version digits), Shadow style `T03`; any 1 to 20 bytes are accepted as
//! given. They come from the config (`prefixes`) and/or a file (`path`: one prefix per line,
//! `#` comments, blank lines). The whole list is parsed before it is used, so a bad file never
//! half-applies on reload; errors name the file and the line.
//!
//! `allows` runs on every announce, so the prefixes are kept as one sorted, flat table per
//! prefix length: a check is a binary search per distinct length (usually one or two), with no
//! hashing and no allocation.

use std::path::Path;

use serde::Deserialize;

use crate::protocol::PeerId;

/// What an announce from a refused client is told (UDP error packet, HTTP `failure reason`).
pub const REFUSED_MESSAGE: &str = "client not allowed";

/// What the list means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every client may announce; nothing is read.
    #[default]
    Off,
    /// Only clients whose peer_id starts with a listed prefix.
    Allow,
    /// Every client but those whose peer_id starts with a listed prefix.
    Deny,
}

/// The `[client_list]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientListConfig {
    pub mode: Mode,
    /// Prefixes listed in the config itself.
    pub prefixes: Vec<String>,
    /// A file of more prefixes, one per line (empty: none). Re-read on reload.
    pub path: String,
}

/// A list that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ClientListError {
    #[error("cannot read client list {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("client list {file}, line {line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
    #[error("client_list.prefixes[{index}]: {message}")]
    Config { index: usize, message: String },
    #[error(
        "client_list: mode = {mode} but no prefix is listed (in prefixes or the file at path)"
    )]
    Empty { mode: &'static str },
}

/// Longest prefix: a whole peer_id.
const MAX_PREFIX: usize = 20;

/// The prefixes of one length, sorted and deduplicated, stored back to back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    len: usize,
    keys: Box<[u8]>,
}

impl Group {
    fn contains(&self, peer_id: &PeerId) -> bool {
        let probe = &peer_id[..self.len];
        let (mut lo, mut hi) = (0, self.keys.len() / self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let key = &self.keys[mid * self.len..(mid + 1) * self.len];
            match key.cmp(probe) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }
}

/// A parsed list; cheap to test a peer_id against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientList {
    mode: Mode,
    /// One group per prefix length present, shortest first.
    groups: Box<[Group]>,
}

impl ClientList {
    /// Lets every client announce.
    pub fn off() -> ClientList {
        ClientList::default()
    }

    /// Builds the list the config describes, reading its file; with mode `off` nothing is read.
    pub fn load(config: &ClientListConfig) -> Result<ClientList, ClientListError> {
        if config.mode == Mode::Off {
            return Ok(ClientList::off());
        }
        if config.path.is_empty() {
            return Self::parse(config.mode, &config.prefixes, None);
        }
        let path = Path::new(&config.path);
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ClientListError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(config.mode, &config.prefixes, Some((&text, &file)))
    }

    /// Builds the list from config prefixes and, optionally, file text (named `file` in errors).
    pub fn parse(
        mode: Mode,
        prefixes: &[String],
        file: Option<(&str, &str)>,
    ) -> Result<ClientList, ClientListError> {
        if mode == Mode::Off {
            return Ok(ClientList::off());
        }
        let mut all: Vec<&[u8]> = Vec::with_capacity(prefixes.len());
        for (index, p) in prefixes.iter().enumerate() {
            check_prefix(p).map_err(|message| ClientListError::Config { index, message })?;
            all.push(p.as_bytes());
        }
        if let Some((text, name)) = file {
            for (i, raw) in text.lines().enumerate() {
                let line = raw.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                check_prefix(line).map_err(|message| ClientListError::Line {
                    file: name.to_string(),
                    line: i + 1,
                    message,
                })?;
                all.push(line.as_bytes());
            }
        }
        if all.is_empty() {
            return Err(ClientListError::Empty {
                mode: match mode {
                    Mode::Allow => "allow",
                    _ => "deny",
                },
            });
        }
        all.sort_unstable_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
        all.dedup();
        let groups = all
            .chunk_by(|a, b| a.len() == b.len())
            .map(|same| Group {
                len: same[0].len(),
                keys: same.concat().into_boxed_slice(),
            })
            .collect();
        Ok(ClientList { mode, groups })
    }

    /// Whether a client with this peer_id may announce.
    #[inline]
    pub fn allows(&self, peer_id: &PeerId) -> bool {
        match self.mode {
            Mode::Off => true,
            Mode::Allow => self.listed(peer_id),
            Mode::Deny => !self.listed(peer_id),
        }
    }

    fn listed(&self, peer_id: &PeerId) -> bool {
        self.groups.iter().any(|g| g.contains(peer_id))
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Distinct prefixes listed (0 when off).
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.keys.len() / g.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

fn check_prefix(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("empty prefix".to_string());
    }
    if p.len() > MAX_PREFIX {
        return Err(format!(
            "prefix {p:?} is {} bytes; a peer_id has {MAX_PREFIX}",
            p.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(prefix: &[u8]) -> PeerId {
        let mut p = *b"XXXXXXXXXXXXXXXXXXXX";
        p[..prefix.len()].copy_from_slice(prefix);
        p
    }

    fn list(mode: Mode, prefixes: &[&str]) -> ClientList {
        let owned: Vec<String> = prefixes.iter().map(|s| s.to_string()).collect();
        ClientList::parse(mode, &owned, None).unwrap()
    }

    #[test]
    fn off_allows_everyone_and_reads_nothing() {
        let config = ClientListConfig {
            mode: Mode::Off,
            prefixes: vec![],
            path: "/nonexistent/clients.txt".into(),
        };
        let l = ClientList::load(&config).unwrap();
        assert!(l.allows(&id(b"-qB4650-")) && l.allows(&[0u8; 20]));
        assert!(l.is_empty());
    }

    #[test]
    fn allow_list_admits_only_listed_prefixes() {
        let l = list(Mode::Allow, &["-qB4", "T03", "-lt0D"]);
        assert!(l.allows(&id(b"-qB4650-")), "Azureus style, listed");
        assert!(l.allows(&id(b"-qB4")), "exactly the prefix");
        assert!(l.allows(&id(b"T03I-----")), "Shadow style");
        assert!(l.allows(&id(b"-lt0D80-")));
        assert!(!l.allows(&id(b"-qB5000-")), "another version");
        assert!(!l.allows(&id(b"-qb4650-")), "case matters");
        assert!(!l.allows(&id(b"-TR3000-")));
        assert!(!l.allows(&id(b"T04")));
        assert!(!l.allows(&id(b"-lt0C")));
        assert_eq!(REFUSED_MESSAGE, "client not allowed");
    }

    #[test]
    fn deny_list_refuses_only_listed_prefixes() {
        let l = list(Mode::Deny, &["-XL0", "-SD"]);
        assert!(!l.allows(&id(b"-XL0012-")));
        assert!(!l.allows(&id(b"-SD0100-")));
        assert!(l.allows(&id(b"-XL1012-")));
        assert!(l.allows(&id(b"-qB4650-")));
        assert!(l.allows(&id(b"-S")), "shorter than the prefix");
    }

    #[test]
    fn every_prefix_length_from_one_to_twenty() {
        let full = "ABCDEFGHIJKLMNOPQRST";
        for n in 1..=20 {
            let l = list(Mode::Allow, &[&full[..n]]);
            assert!(l.allows(&id(full.as_bytes())), "length {n}");
            let mut other = id(full.as_bytes());
            other[n - 1] = b'z';
            assert!(!l.allows(&other), "last byte differs, length {n}");
        }
    }

    #[test]
    fn many_prefixes_of_mixed_lengths_match_exactly_the_listed_ones() {
        // A brute-force oracle over a table large enough for the binary search to branch a lot.
        let prefixes: Vec<String> = (0..300u32)
            .map(|i| {
                format!(
                    "-{}{:0w$}",
                    (b'A' + (i % 26) as u8) as char,
                    i,
                    w = 1 + (i % 4) as usize
                )
            })
            .collect();
        let l = ClientList::parse(Mode::Allow, &prefixes, None).unwrap();
        for probe in 0..2000u32 {
            let text = format!(
                "-{}{:05}-abcdefghijklmnop",
                (b'A' + (probe % 29) as u8) as char,
                probe
            );
            let pid: PeerId = text.as_bytes()[..20].try_into().unwrap();
            let expected = prefixes.iter().any(|p| pid.starts_with(p.as_bytes()));
            assert_eq!(l.allows(&pid), expected, "{text}");
        }
        for p in &prefixes {
            let mut pid = [b'~'; 20];
            pid[..p.len()].copy_from_slice(p.as_bytes());
            assert!(l.allows(&pid), "{p}");
        }
    }

    #[test]
    fn file_and_config_prefixes_are_merged() {
        let text = "# denied clients\n-XL0   # Xunlei\n\n  -SD  \nT03\n";
        let l = ClientList::parse(
            Mode::Deny,
            &["-BN".to_string(), "-XL0".to_string()],
            Some((text, "clients.txt")),
        )
        .unwrap();
        assert_eq!(l.len(), 4, "duplicates merged");
        for refused in [&b"-XL0012-"[..], b"-SD0100-", b"T03A", b"-BN0001-"] {
            assert!(
                !l.allows(&id(refused)),
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
        assert!(l.allows(&id(b"-qB4650-")));
    }

    #[test]
    fn bad_prefixes_are_refused_with_where() {
        let e = ClientList::parse(
            Mode::Allow,
            &[],
            Some(("-qB4\n\n-ABCDEFGHIJKLMNOPQRSTU\n", "clients.txt")),
        )
        .unwrap_err();
        assert!(
            matches!(&e, ClientListError::Line { file, line: 3, .. } if file == "clients.txt"),
            "{e:?}"
        );
        assert!(e.to_string().contains("clients.txt, line 3"), "{e}");
        assert!(
            e.to_string().contains("is 22 bytes; a peer_id has 20"),
            "{e}"
        );

        let e = ClientList::parse(Mode::Deny, &["-qB4".into(), "".into()], None).unwrap_err();
        assert!(
            matches!(e, ClientListError::Config { index: 1, .. }),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "client_list.prefixes[1]: empty prefix");
    }

    #[test]
    fn a_list_with_nothing_in_it_is_refused() {
        for mode in [Mode::Allow, Mode::Deny] {
            let e = ClientList::parse(mode, &[], Some(("# nothing\n\n", "f"))).unwrap_err();
            assert!(matches!(e, ClientListError::Empty { .. }), "{e:?}");
        }
        assert!(ClientList::parse(Mode::Off, &[], None).unwrap().is_empty());
    }

    #[test]
    fn load_reads_the_file_and_reload_sees_changes() {
        let dir = std::env::temp_dir().join(format!("hayate-client-list-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("clients.txt");
        std::fs::write(&path, "-qB4\n").unwrap();
        let config = ClientListConfig {
            mode: Mode::Allow,
            prefixes: vec!["T03".into()],
            path: path.display().to_string(),
        };
        let l = ClientList::load(&config).unwrap();
        assert!(l.allows(&id(b"-qB4650-")) && l.allows(&id(b"T03A")));
        assert!(!l.allows(&id(b"-TR3000-")));

        std::fs::write(&path, "-TR3\n").unwrap();
        let l = ClientList::load(&config).unwrap();
        assert!(!l.allows(&id(b"-qB4650-")) && l.allows(&id(b"-TR3000-")));

        std::fs::write(&path, "-TR3\n-this-prefix-is-too-long\n").unwrap();
        let e = ClientList::load(&config).unwrap_err().to_string();
        assert!(e.contains(&format!("{}, line 2", path.display())), "{e}");

        std::fs::remove_file(&path).unwrap();
        let e = ClientList::load(&config).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read client list {}", path.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_section_parses_and_refuses_unknown_keys() {
        let c: ClientListConfig =
            toml::from_str("mode = \"deny\"\nprefixes = [\"-XL0\", \"T03\"]\npath = \"/etc/x\"\n")
                .unwrap();
        assert_eq!(c.mode, Mode::Deny);
        assert_eq!(c.prefixes, vec!["-XL0", "T03"]);
        assert_eq!(c.path, "/etc/x");
        assert_eq!(
            toml::from_str::<ClientListConfig>("").unwrap(),
            ClientListConfig::default()
        );
        let e = toml::from_str::<ClientListConfig>("mode = \"allow\"\nprefix = []\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `prefix`"), "{e}");
        assert!(toml::from_str::<ClientListConfig>("mode = \"sometimes\"\n").is_err());
    }
}
