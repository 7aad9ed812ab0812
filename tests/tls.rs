//! HTTPS on `[[http.tls]]` listeners, with certificates the tests make (rcgen): an announce over
//! TLS 1.3 and over TLS 1.2 gets the same bencoded reply as over plain HTTP; a reload serves
//! the new certificate to new connections while a connection opened before it keeps working; a
//! reload with a broken file keeps the certificate in force and says which file; missing files
//! at start stop the start naming the file; plain HTTP on the TLS port is a counted handshake
//! failure. And the real binary with curl: SIGHUP swaps the certificate curl sees.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hayate_tracker::config::Config;
use hayate_tracker::Tracker;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls;

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files in `dir` named
/// `cert.pem` and `key.pem` (overwriting), and its DER.
fn make_certificate(dir: &Path, name: &str) -> CertificateDer<'static> {
    let cert = rcgen::generate_simple_self_signed(vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        name.to_string(),
    ])
    .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    cert.cert.der().clone()
}

fn config(dir: &Path) -> Config {
    Config::from_toml_str(
        &format!(
            "[udp]\naddresses = [\"127.0.0.1:0\"]\n[http]\naddresses = [\"127.0.0.1:0\"]\n\
             [[http.tls]]\naddress = \"127.0.0.1:0\"\ntls_certificate = \"{0}/cert.pem\"\n\
             tls_private_key = \"{0}/key.pem\"\n\
             [workers]\ncount = 2\n[metrics]\naddress = \"127.0.0.1:0\"\ninterval_ms = 100\n",
            dir.display()
        ),
        "test config",
    )
    .unwrap()
}

/// A TLS client trusting only `root`, speaking only `version` when given.
fn client(
    root: &CertificateDer<'static>,
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = match version {
        Some(v) => vec![v],
        None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<Tls> {
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name.to_owned()).unwrap();
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake to its end, so a refused certificate shows here.
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// One keep-alive request on `tls`: (status, body).
fn request(tls: &mut Tls, path: &str) -> (u16, String) {
    write!(tls, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    tls.flush().unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tls.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content length");
            if body.len() >= len {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, body[..len].to_string());
            }
        }
    }
}

fn announce_path(hash: u8, port: u16) -> String {
    format!(
        "/announce?info_hash={}&peer_id=-HT0001-{port:012}&port={port}&left=5",
        "%".to_string() + &format!("{hash:02x}%").repeat(19) + &format!("{hash:02x}")
    )
}

fn served_certificate(tls: &Tls) -> CertificateDer<'static> {
    tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[test]
fn announces_over_tls_13_and_12_and_a_reload_swaps_the_certificate_for_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_certificate(dir.path(), "first");
    let config = config(dir.path());
    let t = Tracker::start(config.clone()).unwrap();
    let (plain, https) = (t.http_addresses()[0], t.http_addresses()[1]);

    // TLS 1.3 (the default) and TLS 1.2 both serve the tracker, with the same reply as plain.
    let mut open = connect(https, client(&first, None)).unwrap();
    assert_eq!(
        open.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        open.conn.alpn_protocol(),
        None,
        "the client offered no ALPN"
    );
    let (status, body) = request(&mut open, &announce_path(1, 7001));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("8:intervali"), "{body}");
    assert!(body.contains("8:completei0e10:incompletei1e"), "{body}");
    let mut v12 = connect(https, client(&first, Some(&rustls::version::TLS12))).unwrap();
    assert_eq!(
        v12.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (status, body) = request(&mut v12, &announce_path(1, 7002));
    assert_eq!(status, 200, "{body}");
    // The second peer over TLS is in the same swarm plain HTTP sees.
    let (status, plain_body) = http_announce(plain, &[1; 20], 7003, 5, "");
    assert_eq!(status, 200);
    assert!(plain_body.contains("10:incompletei3e"), "{plain_body}");

    // New files, reloaded: new connections see the new certificate, and a client trusting only
    // the old one is refused; the connection opened before keeps working.
    let second = make_certificate(dir.path(), "second");
    assert_ne!(first, second);
    let results = t.reload_tls(&config);
    assert_eq!(results.len(), 1);
    assert!(results[0].1.is_ok(), "{:?}", results[0].1);
    let new = connect(https, client(&second, None)).unwrap();
    assert_eq!(served_certificate(&new), second);
    assert!(
        connect(https, client(&first, None)).is_err(),
        "the old certificate is still served"
    );
    let (status, body) = request(&mut open, &announce_path(2, 7004));
    assert_eq!(status, 200, "the connection from before the reload: {body}");
    assert_eq!(served_certificate(&open), first);

    // A broken certificate file: the reload says which file, and the certificate in force stays.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate\n").unwrap();
    let results = t.reload_tls(&config);
    let e = results[0]
        .1
        .as_ref()
        .expect_err("a broken file fails")
        .to_string();
    assert!(e.contains("cert.pem"), "{e}");
    assert!(e.contains("tls_certificate"), "{e}");
    let still = connect(https, client(&second, None)).unwrap();
    assert_eq!(served_certificate(&still), second);
    // A key of another certificate: refused as not matching.
    let other = tempfile::tempdir().unwrap();
    make_certificate(other.path(), "other");
    make_certificate(dir.path(), "third");
    std::fs::copy(other.path().join("key.pem"), dir.path().join("key.pem")).unwrap();
    let e = t.reload_tls(&config)[0]
        .1
        .as_ref()
        .expect_err("a foreign key")
        .to_string();
    assert!(e.contains("does not belong"), "{e}");
    assert_eq!(
        served_certificate(&connect(https, client(&second, None)).unwrap()),
        second
    );

    // Plain HTTP on the TLS port: no reply, counted as a failed handshake (the second: the
    // client that refused the old certificate above broke off its handshake too).
    let metrics = t.metrics_address().unwrap();
    let mut raw = TcpStream::connect(https).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The tracker may close as soon as it reads bytes that are not TLS: a write after that
    // fails, which is the point.
    let request = format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", announce_path(3, 7005));
    let _ = raw.write_all(request.as_bytes());
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("interval"),
        "answered in plain text"
    );
    wait_sample(
        metrics,
        "hayate_errors_total",
        &[("protocol", "http"), ("reason", "tls_handshake")],
        2.0,
        Duration::from_secs(10),
    );
    t.stop().unwrap();
}

#[test]
fn missing_or_bad_files_at_start_stop_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = Tracker::start(config(dir.path()))
        .err()
        .expect("no files")
        .to_string();
    assert!(
        e.contains(&format!("{}/cert.pem", dir.path().display())),
        "{e}"
    );
    make_certificate(dir.path(), "a");
    std::fs::write(
        dir.path().join("key.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = Tracker::start(config(dir.path()))
        .err()
        .expect("a bad key")
        .to_string();
    assert!(e.contains("key.pem"), "{e}");
    assert!(e.contains("tls_private_key"), "{e}");
}

/// curl's `GET url` over HTTPS trusting only `ca`: (exit status, body).
fn curl_get(curl: &str, ca: &Path, url: &str) -> (i32, String) {
    let out = std::process::Command::new(curl)
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_binary_serves_curl_over_https_and_sighup_swaps_the_certificate() {
    let Some(curl) = tool(&["curl"], "curl") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    make_certificate(dir.path(), "first");
    let trusted = dir.path().join("first-ca.pem");
    std::fs::copy(dir.path().join("cert.pem"), &trusted).unwrap();
    let file = dir.path().join("hayate.toml");
    std::fs::write(
        &file,
        format!(
            "[udp]\naddresses = [\"127.0.0.1:0\"]\n[http]\naddresses = []\n\
             [[http.tls]]\naddress = \"127.0.0.1:0\"\ntls_certificate = \"{0}/cert.pem\"\n\
             tls_private_key = \"{0}/key.pem\"\n[metrics]\naddress = \"\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let d = Daemon::start(hayate_with_config(&file));
    let url = format!(
        "https://127.0.0.1:{}{}",
        d.http[0].port(),
        announce_path(9, 7100)
    );
    let (code, body) = curl_get(curl, &trusted, &url);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("8:intervali"), "{body}");

    make_certificate(dir.path(), "second");
    let second = dir.path().join("second-ca.pem");
    std::fs::copy(dir.path().join("cert.pem"), &second).unwrap();
    d.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log().contains("TLS certificate reloaded") {
        assert!(Instant::now() < deadline, "no reload logged:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, body) = curl_get(curl, &second, &url);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("8:intervali"), "{body}");
    // curl exit 60: the peer's certificate cannot be verified against the old one.
    let (code, body) = curl_get(curl, &trusted, &url);
    assert_eq!(code, 60, "{body}");
}
