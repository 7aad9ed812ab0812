//! The `hayate` binary as an operator runs it: printing and checking configs, serving on a
//! config file, and stopping on a signal.

use std::io::Write;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/hayate_process.rs"]
mod hayate_process;

use hayate_process::Hayate;

fn hayate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hayate"))
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hayate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

#[test]
fn print_config_is_the_documented_default_and_checks_clean() {
    let out = hayate().arg("--print-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[udp]") && text.contains("announce_interval_secs"));
    let path = temp_config("printed.toml", &text);
    let out = hayate().arg("--check-config").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_names_file_and_key() {
    let cases = [
        ("[udp]\nbogus = 1\n", "bogus"),
        ("[workers]\ncount = \"many\"\n", "workers.count"),
        ("[protocol]\nmax_numwant = 0\n", "protocol.max_numwant"),
        ("[udp]\naddresses = [\"localhost\"]\n", "udp.addresses"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = temp_config(&format!("bad{i}.toml"), text);
        let out = hayate().arg("--check-config").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{text}: {err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}

#[test]
fn check_config_warns_about_what_a_usable_config_still_gets_wrong() {
    let path = temp_config(
        "warn.toml",
        "[metrics]\naddress = \"0.0.0.0:9000\"\n[privileges]\nuser = \"no-such-user-hayate\"\n\
         [workers]\ncount = 4\ninbox_capacity = 1048576\n",
    );
    let out = hayate().arg("--check-config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("metrics.address 0.0.0.0:9000 is not a loopback"),
        "{err}"
    );
    assert!(err.contains("no-such-user-hayate"), "{err}");
    assert!(err.contains("MiB at start with 4 workers"), "{err}");
    // The shipped defaults draw no warning.
    let out = hayate().arg("--print-config").output().unwrap();
    let path = temp_config("quiet.toml", &String::from_utf8(out.stdout).unwrap());
    let out = hayate().arg("--check-config").arg(&path).output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_documents_the_options() {
    let out = hayate().arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in ["--config", "--print-config", "--check-config"] {
        assert!(text.contains(flag), "{text}");
    }
}

#[test]
fn serves_then_stops_on_sigterm_within_a_second() {
    // Port 0: the tracker binds a free port and names it in its "hayate serving" line.
    let path = temp_config(
        "serve.toml",
        "[udp]\naddresses = [\"127.0.0.1:0\"]\n[workers]\ncount = 2\n\
         [metrics]\naddress = \"127.0.0.1:0\"\n[http]\naddresses = []\n",
    );
    let mut child = Hayate::spawn(hayate().arg("--config").arg(&path).env("RUST_LOG", "info"));
    let addrs = child.serving_udp();
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut connect = 0x41727101980u64.to_be_bytes().to_vec();
    connect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 42]);
    let mut buf = [0u8; 64];
    // Serving was logged once every worker serves: the first connect is answered.
    client.send_to(&connect, addrs[0]).unwrap();
    let (n, _) = client
        .recv_from(&mut buf)
        .expect("tracker answered a connect");
    assert_eq!(n, 16);
    assert_eq!(&buf[4..8], &[0, 0, 0, 42]);
    child.signal(libc::SIGTERM);
    let asked = Instant::now();
    let (status, log) = child.wait_exit(Duration::from_secs(3));
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("stopped"), "{log}");
}
