//! The configuration: its schema, the embedded defaults (`config.toml` at the repository root),
//! and the rules a value must meet. A user file is layered over the defaults key by key, so it
//! may set only what it changes; every error names the file, the key and what is allowed.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// The commented default configuration, as shipped in `config.toml`.
pub const DEFAULT_CONFIG: &str = include_str!("../config.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub udp: UdpConfig,
    pub http: HttpConfig,
    pub workers: WorkersConfig,
    pub protocol: ProtocolConfig,
    pub cleaning: CleaningConfig,
    pub metrics: MetricsConfig,
    pub full_scrape: FullScrapeConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub access_list: AccessListConfig,
    pub blocklist: BlocklistConfig,
    pub client_list: crate::policy::client_list::ClientListConfig,
    pub jwt: crate::policy::jwt::JwtConfig,
    pub privileges: PrivilegesConfig,
    pub state: StateConfig,
    pub cluster: crate::cluster::ClusterConfig,
}

/// What survives a restart, and where.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Directory of the snapshot; "" is off, "$NAME" the directory an environment variable
    /// names (off when it is unset).
    pub directory: String,
    pub snapshot_interval_secs: u32,
}

impl StateConfig {
    /// The state directory, if state is kept.
    pub fn directory(&self) -> Option<std::path::PathBuf> {
        let d = self.directory.trim();
        let d = match d.strip_prefix('$') {
            Some(var) => std::env::var(var).ok()?,
            None => d.to_string(),
        };
        (!d.is_empty()).then(|| d.into())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpConfig {
    pub addresses: Vec<SocketAddr>,
    pub recv_buffer_bytes: u32,
    pub recv_depth: u32,
    pub send_depth: u32,
    pub backend: Backend,
    /// Have the kernel deliver each announce to its owner's socket (see `steering`).
    pub steer_announces: bool,
}

/// Which I/O loop the UDP workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// io_uring where it can be set up, else epoll (with a warning).
    Auto,
    /// io_uring or fail to start.
    IoUring,
    /// epoll with recvmmsg/sendmmsg batches.
    Epoll,
}

/// Which torrents are served (see `access_list`); reloaded on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessListConfig {
    pub mode: crate::policy::access_list::Mode,
    /// The file of hex info hashes; required unless `mode` is `off`.
    pub path: String,
}

/// Sources to ignore (see `policy::blocklist`); reloaded on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlocklistConfig {
    /// A file of networks and addresses, one per line; empty: none.
    pub path: String,
}

/// The user and group to run as once every socket is bound (empty: stay as started).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivilegesConfig {
    pub user: String,
    pub group: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub addresses: Vec<SocketAddr>,
    /// HTTPS listeners, each with its certificate and key.
    pub tls: Vec<crate::http::tls::TlsListenerConfig>,
    pub trusted_proxies: Vec<crate::cidr::Cidr>,
    pub real_ip_header: String,
    pub allow_ip_spoofing: bool,
    pub max_connections: u32,
    /// Open connections one client address holds at most; 0 is no limit.
    pub max_connections_per_ip: u32,
    pub header_read_timeout_secs: u32,
    pub max_request_bytes: u32,
    pub worker_timeout_ms: u32,
}

impl HttpConfig {
    /// Every listener's address: the plain ones, then the TLS ones, in config order.
    pub fn listen_addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        (self.addresses.iter().copied()).chain(self.tls.iter().map(|t| t.address))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    pub count: u32,
    pub pin_cores: bool,
    pub inbox_capacity: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolConfig {
    pub announce_interval_secs: u32,
    pub min_interval_secs: u32,
    pub default_numwant: u32,
    pub max_numwant: u32,
    pub max_scrape_hashes: u32,
    pub connection_id_lifetime_secs: u32,
    pub interval_jitter_secs: u32,
    pub jitter_min_interval: bool,
    pub respect_af: bool,
    pub prefer_subnet_v4: u8,
    pub prefer_subnet_v6: u8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleaningConfig {
    pub peer_lifetime_secs: u32,
    pub sweep_interval_secs: u32,
    pub keep_downloaded_secs: u32,
}

/// Bounds that keep a flood of fake torrents or peers from costing memory without bound.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Torrents the whole tracker holds at most (each worker holds its share).
    pub max_torrents: u32,
    /// Peers one torrent holds at most, IPv4 and IPv6 together.
    pub max_peers_per_torrent: u32,
    /// Peers the whole tracker holds at most (each worker holds its share).
    pub max_peers: u32,
    /// Peers one source (IPv4 address, IPv6 /64) holds at most; 0 is no limit.
    pub max_peers_per_source: u32,
    /// Torrents one source may add in an hour; 0 is no limit.
    pub max_new_torrents_per_source: u32,
    /// Requests a second one source may send, UDP and HTTP each; 0 is no limit.
    pub requests_per_source_per_sec: u32,
    /// Requests one source may send at once before its rate applies.
    pub request_burst: u32,
    /// Sources no per-source limit applies to.
    pub exempt: Vec<crate::cidr::Cidr>,
}

impl LimitsConfig {
    /// The exempt sources as a set to match against.
    pub fn exempt(&self) -> crate::cidr::Networks {
        crate::cidr::Networks::new(self.exempt.iter().copied())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    /// Seconds between the summary lines logged at info level; 0: none.
    pub summary_secs: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` of the Prometheus endpoint; empty turns it off (see `Config::metrics_address`).
    pub address: String,
    pub interval_ms: u32,
    pub stale_after_secs: u32,
    /// Seconds between censuses of the swarm for the status page (largest torrents, peers by
    /// client); 0: none.
    pub census_secs: u32,
}

/// BEP 48's `/scrape` without `info_hash`: every torrent's counts, from a census.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullScrapeConfig {
    pub enabled: bool,
    /// Seconds between rebuilds of the body; also how often one source may fetch it.
    pub interval_secs: u32,
    /// A file the body is also written to after each rebuild (gzip if it ends in `.gz`); "":
    /// none.
    pub path: String,
}

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error(
        "config file {file} is larger than {} bytes: not a config file",
        MAX_CONFIG_BYTES
    )]
    TooLarge { file: String },
    #[error("config file {file} is not valid TOML: {message}")]
    Syntax { file: String, message: String },
    #[error("config file {file}, key `{key}`: {message}")]
    Key {
        file: String,
        key: String,
        message: String,
    },
}

/// A config file is read up to this size; past it, it is refused (not a config file: a device,
/// a log named by mistake).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Most BEP 15 scrape hashes that fit one reply in a 1500-byte packet.
pub const MAX_UDP_SCRAPE_HASHES: u32 = 74;

impl Config {
    /// The embedded defaults.
    pub fn default_config() -> Config {
        Self::from_toml_str(DEFAULT_CONFIG, "<embedded config.toml>")
            .expect("the embedded config.toml is valid (checked by a unit test)")
    }

    /// Reads a file and layers it over the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let read = |source| ConfigError::Read {
            file: file.clone(),
            source,
        };
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(
                std::fs::File::open(path).map_err(read)?,
                MAX_CONFIG_BYTES + 1,
            ),
            &mut text,
        )
        .map_err(read)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { file });
        }
        Self::from_toml_str(&text, &file)
    }

    /// Parses `text` (named `file` in errors) layered over the defaults, then validates it.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Config, ConfigError> {
        let syntax = |e: toml::de::Error| ConfigError::Syntax {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        };
        let mut merged: toml::Table = DEFAULT_CONFIG.parse().map_err(syntax)?;
        let user: toml::Table = text.parse().map_err(syntax)?;
        merge(&mut merged, user);
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
                let key = e.path().to_string();
                let message = e.into_inner().to_string();
                ConfigError::Key {
                    file: file.to_string(),
                    key,
                    message: message.trim_end().to_string(),
                }
            })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Key {
                file: file.to_string(),
                key: key.to_string(),
                message,
            })?;
        Ok(config)
    }

    /// Checks values that parse but cannot work, returning the key and what is allowed.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let range = |key: &'static str, v: u32, lo: u32, hi: u32| {
            if v < lo || v > hi {
                Err((key, format!("must be between {lo} and {hi}, got {v}")))
            } else {
                Ok(())
            }
        };
        range("udp.recv_depth", self.udp.recv_depth, 1, 4096)?;
        range("udp.send_depth", self.udp.send_depth, 1, 16384)?;
        range(
            "udp.recv_buffer_bytes",
            self.udp.recv_buffer_bytes,
            4096,
            1 << 30,
        )?;
        range("workers.count", self.workers.count, 0, 1024)?;
        range(
            "workers.inbox_capacity",
            self.workers.inbox_capacity,
            16,
            1 << 20,
        )?;
        let p = &self.protocol;
        range(
            "protocol.announce_interval_secs",
            p.announce_interval_secs,
            1,
            86_400,
        )?;
        range(
            "protocol.min_interval_secs",
            p.min_interval_secs,
            1,
            p.announce_interval_secs,
        )?;
        range("protocol.max_numwant", p.max_numwant, 1, 1_000)?;
        range(
            "protocol.default_numwant",
            p.default_numwant,
            1,
            p.max_numwant,
        )?;
        range(
            "protocol.max_scrape_hashes",
            p.max_scrape_hashes,
            1,
            MAX_UDP_SCRAPE_HASHES,
        )?;
        range(
            "protocol.connection_id_lifetime_secs",
            p.connection_id_lifetime_secs,
            120,
            3_600,
        )?;
        range(
            "protocol.interval_jitter_secs",
            p.interval_jitter_secs,
            0,
            p.announce_interval_secs,
        )?;
        range(
            "protocol.prefer_subnet_v4",
            p.prefer_subnet_v4.into(),
            0,
            32,
        )?;
        range(
            "protocol.prefer_subnet_v6",
            p.prefer_subnet_v6.into(),
            0,
            128,
        )?;
        let c = &self.cleaning;
        // A client told the longest jittered interval must still be in the swarm when it
        // comes back.
        range(
            "cleaning.peer_lifetime_secs",
            c.peer_lifetime_secs,
            p.announce_interval_secs + p.interval_jitter_secs,
            7 * 86_400,
        )?;
        range(
            "cleaning.sweep_interval_secs",
            c.sweep_interval_secs,
            1,
            86_400,
        )?;
        range(
            "cleaning.keep_downloaded_secs",
            c.keep_downloaded_secs,
            0,
            365 * 86_400,
        )?;
        range(
            "state.snapshot_interval_secs",
            self.state.snapshot_interval_secs,
            5,
            86_400,
        )?;
        let m = &self.metrics;
        if !m.address.is_empty() && m.address.parse::<SocketAddr>().is_err() {
            return Err((
                "metrics.address",
                format!(
                    "must be host:port such as \"127.0.0.1:9000\", or \"\" for off; got {:?}",
                    m.address
                ),
            ));
        }
        range("metrics.interval_ms", m.interval_ms, 100, 60_000)?;
        range("metrics.stale_after_secs", m.stale_after_secs, 2, 3_600)?;
        range("metrics.census_secs", m.census_secs, 0, 86_400)?;
        let mut seen = std::collections::HashSet::new();
        // Port 0 binds a new port each time: never the same listener twice.
        for addr in self.http.listen_addresses().filter(|a| a.port() != 0) {
            if !seen.insert(addr) {
                return Err((
                    "http.tls",
                    format!(
                        "{addr} is listed twice among http.addresses and [[http.tls]] addresses"
                    ),
                ));
            }
        }
        for t in &self.http.tls {
            if t.tls_certificate.as_os_str().is_empty() || t.tls_private_key.as_os_str().is_empty()
            {
                return Err((
                    "http.tls",
                    format!(
                        "{} needs both tls_certificate and tls_private_key",
                        t.address
                    ),
                ));
            }
        }
        range(
            "full_scrape.interval_secs",
            self.full_scrape.interval_secs,
            1,
            86_400,
        )?;
        if !self.full_scrape.path.trim().is_empty() && !self.full_scrape.enabled {
            return Err((
                "full_scrape.path",
                "is written only while full_scrape.enabled = true".into(),
            ));
        }
        self.cluster.validate()?;
        range("limits.max_torrents", self.limits.max_torrents, 1, u32::MAX)?;
        range(
            "limits.max_peers_per_torrent",
            self.limits.max_peers_per_torrent,
            1,
            crate::swarm::MAX_PEERS_PER_TORRENT as u32,
        )?;
        range("limits.max_peers", self.limits.max_peers, 1, u32::MAX)?;
        range(
            "limits.request_burst",
            self.limits.request_burst,
            1,
            1_000_000,
        )?;
        range(
            "limits.requests_per_source_per_sec",
            self.limits.requests_per_source_per_sec,
            0,
            1_000_000,
        )?;
        if self.access_list.mode != crate::policy::access_list::Mode::Off
            && self.access_list.path.trim().is_empty()
        {
            return Err((
                "access_list.path",
                "must name a file of info hashes when access_list.mode is \"allow\" or \"deny\""
                    .into(),
            ));
        }
        if self.privileges.user.is_empty() && !self.privileges.group.is_empty() {
            return Err((
                "privileges.group",
                "needs privileges.user too (a group alone would leave the process root)".into(),
            ));
        }
        if let Err(message) = check_log_filter(&self.log.level) {
            return Err(("log.level", message));
        }
        for (i, a) in self.udp.addresses.iter().enumerate() {
            if self.udp.addresses[..i].contains(a) {
                return Err(("udp.addresses", format!("{a} is listed twice")));
            }
        }
        let h = &self.http;
        for (i, a) in h.addresses.iter().enumerate() {
            if h.addresses[..i].contains(a) {
                return Err(("http.addresses", format!("{a} is listed twice")));
            }
        }
        if hyper::header::HeaderName::from_bytes(h.real_ip_header.as_bytes()).is_err() {
            return Err((
                "http.real_ip_header",
                format!("`{}` is not an HTTP header name", h.real_ip_header),
            ));
        }
        range("http.max_connections", h.max_connections, 1, 1 << 20)?;
        range(
            "http.max_connections_per_ip",
            h.max_connections_per_ip,
            0,
            1 << 20,
        )?;
        range(
            "http.header_read_timeout_secs",
            h.header_read_timeout_secs,
            1,
            300,
        )?;
        range("http.max_request_bytes", h.max_request_bytes, 1024, 1 << 20)?;
        range("http.worker_timeout_ms", h.worker_timeout_ms, 1, 60_000)?;
        Ok(())
    }

    /// The metrics endpoint's address, or `None` when `metrics.address` is empty (off).
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        // Validated at load: a non-empty address parses.
        self.metrics.address.parse().ok()
    }

    /// Worker threads to run: the configured count, or one per core this process may use.
    pub fn worker_count(&self) -> usize {
        match self.workers.count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        }
    }
}

/// Levels a log filter directive may name.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// A log filter of comma-separated directives, each a level (`info`) or `target=level`
/// (`hayate_tracker::state=debug`). Stricter than tracing's own syntax, where a bare word is a
/// target: `"inof"` there is a filter for a target named "inof" that silences every log.
fn check_log_filter(filter: &str) -> Result<(), String> {
    let mut directives = 0;
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        directives += 1;
        let (target, level) = match directive.rsplit_once('=') {
            Some((target, level)) => (Some(target.trim()), level.trim()),
            None => (None, directive),
        };
        if target == Some("") {
            return Err(format!(
                "`{directive}` names a level but no target before `=`"
            ));
        }
        if !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{directive}`: {level:?} is not a level ({}); a target needs `target=level`",
                LOG_LEVELS.join(", ")
            ));
        }
    }
    if directives == 0 {
        return Err("must name a level such as \"info\"".into());
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(drop)
        .map_err(|e| format!("{filter:?} is not a log filter: {e}"))
}

/// Layers `over` onto `base`: tables merge key by key, any other value replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml_str(text, "test.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn metrics_address_parses_or_is_off() {
        let c = Config::default_config();
        assert_eq!(c.metrics_address(), Some("127.0.0.1:9000".parse().unwrap()));
        let c = Config::from_toml_str("[metrics]\naddress = \"\"\n", "t").unwrap();
        assert_eq!(c.metrics_address(), None);
        let e = err("[metrics]\naddress = \"localhost\"\n");
        assert!(e.contains("metrics.address"), "{e}");
        let e = err("[metrics]\ninterval_ms = 5\n");
        assert!(e.contains("metrics.interval_ms"), "{e}");
    }

    #[test]
    fn log_filters_must_name_levels() {
        for ok in [
            "info",
            "warn,hayate_tracker::state=debug",
            " debug ",
            "hayate_tracker=TRACE",
        ] {
            let toml = format!("[log]\nlevel = {ok:?}\n");
            assert!(Config::from_toml_str(&toml, "t").is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("inof", "\"inof\" is not a level"),
            ("", "must name a level"),
            (" , ", "must name a level"),
            ("=debug", "no target"),
            ("hayate_tracker=loud", "\"loud\" is not a level"),
        ] {
            let e = err(&format!("[log]\nlevel = {bad:?}\n"));
            assert!(e.contains("log.level") && e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_file_past_one_mebibyte_is_refused_without_reading_it_all() {
        let e = Config::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/dev/zero") && e.contains("larger than"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        let mut text = "#".repeat(MAX_CONFIG_BYTES as usize);
        std::fs::write(&path, &text).unwrap();
        assert!(Config::load(&path).is_ok(), "exactly the limit is read");
        text.push('\n');
        std::fs::write(&path, &text).unwrap();
        assert!(Config::load(&path).is_err());
    }

    #[test]
    fn embedded_defaults_are_valid() {
        let c = Config::default_config();
        assert_eq!(c.udp.addresses.len(), 2);
        assert_eq!(c.protocol.announce_interval_secs, 1800);
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let c = Config::from_toml_str("[workers]\ncount = 3\n", "t").unwrap();
        assert_eq!(c.workers.count, 3);
        assert_eq!(c.protocol.max_numwant, 200);
        assert_eq!(c.udp.addresses.len(), 2);
    }

    #[test]
    fn empty_address_list_is_allowed() {
        let c = Config::from_toml_str("[udp]\naddresses = []\n", "t").unwrap();
        assert!(c.udp.addresses.is_empty());
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = err("[udp]\nadresses = []\n");
        assert!(e.contains("test.toml"), "{e}");
        assert!(e.contains("adresses"), "{e}");
        let e = err("[nonsense]\nx = 1\n");
        assert!(e.contains("nonsense"), "{e}");
    }

    #[test]
    fn wrong_type_names_key() {
        let e = err("[workers]\ncount = \"four\"\n");
        assert!(e.contains("workers.count"), "{e}");
        let e = err("[udp]\naddresses = [\"not an address\"]\n");
        assert!(e.contains("udp.addresses"), "{e}");
    }

    #[test]
    fn impossible_value_names_key_and_range() {
        let e = err("[protocol]\nconnection_id_lifetime_secs = 30\n");
        assert!(e.contains("protocol.connection_id_lifetime_secs"), "{e}");
        assert!(e.contains("between 120"), "{e}");
        let e = err("[protocol]\ndefault_numwant = 500\n");
        assert!(e.contains("protocol.default_numwant"), "{e}");
        let e = err("[protocol]\nmax_scrape_hashes = 75\n");
        assert!(e.contains("max_scrape_hashes"), "{e}");
    }

    #[test]
    fn http_section() {
        let c = Config::default_config();
        assert_eq!(c.http.addresses.len(), 2);
        assert!(c.http.trusted_proxies.is_empty() && !c.http.allow_ip_spoofing);
        let c = Config::from_toml_str(
            "[http]\naddresses = []\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
            "t",
        )
        .unwrap();
        assert!(c.http.addresses.is_empty());
        assert_eq!(c.http.trusted_proxies.len(), 2);
        let e = err("[http]\ntrusted_proxies = [\"10.0.0.0/40\"]\n");
        assert!(e.contains("http.trusted_proxies"), "{e}");
        assert!(e.contains("at most 32"), "{e}");
        let e = err("[http]\nreal_ip_header = \"X Forwarded\"\n");
        assert!(e.contains("http.real_ip_header"), "{e}");
        let e = err("[http]\nmax_request_bytes = 10\n");
        assert!(e.contains("http.max_request_bytes"), "{e}");
        let e = err("[http]\naddresses = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n");
        assert!(e.contains("http.addresses") && e.contains("twice"), "{e}");
    }

    #[test]
    fn limits_section() {
        let c = Config::default_config();
        assert!(c.limits.max_torrents >= 1_000_000);
        assert!(c.limits.max_peers_per_torrent >= 10_000);
        let c = Config::from_toml_str("[limits]\nmax_torrents = 10\n", "t").unwrap();
        assert_eq!(c.limits.max_torrents, 10);
        let e = err("[limits]\nmax_peers_per_torrent = 0\n");
        assert!(e.contains("limits.max_peers_per_torrent"), "{e}");
        // A torrent counts at most 2^28 - 1 peers: more is refused by name, not a panic later.
        let e = err("[limits]\nmax_peers_per_torrent = 268435456\n");
        assert!(e.contains("limits.max_peers_per_torrent"), "{e}");
        assert!(e.contains("268435455"), "the bound is named: {e}");
        let c = Config::from_toml_str("[limits]\nmax_peers_per_torrent = 268435455\n", "t");
        assert!(c.is_ok(), "the bound itself is allowed");
        let e = err("[limits]\nmax_torrents = -1\n");
        assert!(e.contains("limits.max_torrents"), "{e}");
    }

    #[test]
    fn service_sections() {
        let c = Config::default_config();
        assert_eq!(c.udp.backend, Backend::Auto);
        assert_eq!(c.access_list.mode, crate::policy::access_list::Mode::Off);
        assert!(c.privileges.user.is_empty() && c.privileges.group.is_empty());
        let c = Config::from_toml_str(
            "[udp]\nbackend = \"epoll\"\n[access_list]\nmode = \"deny\"\npath = \"/x\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.udp.backend, Backend::Epoll);
        assert_eq!(c.access_list.mode, crate::policy::access_list::Mode::Deny);
        let e = err("[udp]\nbackend = \"kqueue\"\n");
        assert!(e.contains("udp.backend"), "{e}");
        let e = err("[access_list]\nmode = \"allow\"\n");
        assert!(e.contains("access_list.path"), "{e}");
        let e = err("[access_list]\nmode = \"maybe\"\n");
        assert!(e.contains("access_list.mode"), "{e}");
        let e = err("[privileges]\ngroup = \"nogroup\"\n");
        assert!(e.contains("privileges.group"), "{e}");
    }

    #[test]
    fn syntax_error_names_file() {
        let e = err("[udp\n");
        assert!(
            e.contains("test.toml") && e.contains("not valid TOML"),
            "{e}"
        );
    }
}
