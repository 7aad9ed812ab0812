#!/usr/bin/env python3
"""End-to-end test: real BitTorrent clients exchange data through a tracker.

Each case starts a seeder of one client and a leecher of another client (each a
separate process in its own process group), both pointed only at the tracker under
test on loopback, with DHT / PEX / LSD / UPnP / NAT-PMP off, so the tracker is the
only source of peers.  A case passes when a probe announce is handed the seeder's
address and port, the leecher's file hashes to the original's SHA-256, an aria2
leecher's log shows its peer came from the tracker, the UDP scrape (and GET /scrape
for HTTP cases) shows exactly the swarm the case made, and hayate's error counters
rose by nothing the case does not expect (tests/clients/README.md has the details).
The restart case also upgrades hayate in place (SIGUSR2) between the seeder's announce
and the leecher's start: the new process must hand out the seeder, which must not have
announced again. The cluster cases run two hayate nodes sharing their swarms through one
Redis ([cluster]): the seeder knows only node A, the leecher only node B, and node B must
hand out the seeder that never announced to it.

IPv4 peers each get a loopback address of their own (seeder 127.0.0.2, leecher
127.0.0.3, bound for both peer and tracker traffic), as on a real network; --same-ip
puts them all on 127.0.0.1 instead (ctorrent excepted, it cannot work that way).

Python 3 standard library only, plus the `libtorrent` module for the libtorrent
client, which runs as a separate process (`e2e.py lt-worker ...`).

Usage:
    e2e.py --tracker-bin target/release/hayate            # the default cases
    e2e.py --tracker-bin ... --cases 'udp4-*,udp6-*'       # globs or substrings
    e2e.py --tracker-kind opentracker                      # compare with opentracker
    e2e.py --tracker-kind mini                             # small reference tracker in here
    e2e.py --list [--matrix capable|all]
The last line printed is `N passed, N failed`.
"""

import argparse
import fcntl
import fnmatch
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

THIS = os.path.abspath(__file__)
PIECE_LEN = 256 * 1024
PAYLOAD_SIZE = 4 * 1024 * 1024 + 12345  # a few MB, last piece not aligned
UDP_PROTOCOL_ID = 0x41727101980


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------- bencode

def bencode(x):
    if isinstance(x, bool):
        raise TypeError("bool")
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, (bytes, bytearray)):
        return b"%d:%s" % (len(x), bytes(x))
    if isinstance(x, list):
        return b"l" + b"".join(bencode(i) for i in x) + b"e"
    if isinstance(x, dict):
        out = [b"d"]
        items = sorted(((k.encode() if isinstance(k, str) else k), v) for k, v in x.items())
        for k, v in items:
            out.append(bencode(k))
            out.append(bencode(v))
        out.append(b"e")
        return b"".join(out)
    raise TypeError(type(x))


def bdecode(data):
    """Decode a complete bencoded value; raises ValueError on any malformation."""

    def dec(i):
        if i >= len(data):
            raise ValueError("truncated")
        c = data[i:i + 1]
        if c == b"i":
            j = data.index(b"e", i)
            return int(data[i + 1:j]), j + 1
        if c == b"l":
            i += 1
            out = []
            while data[i:i + 1] != b"e":
                v, i = dec(i)
                out.append(v)
            return out, i + 1
        if c == b"d":
            i += 1
            out = {}
            while data[i:i + 1] != b"e":
                k, i = dec(i)
                if not isinstance(k, bytes):
                    raise ValueError("dict key not a string")
                v, i = dec(i)
                out[k] = v
            return out, i + 1
        if c.isdigit():
            j = data.index(b":", i)
            n = int(data[i:j])
            if j + 1 + n > len(data):
                raise ValueError("truncated string")
            return data[j + 1:j + 1 + n], j + 1 + n
        raise ValueError("bad byte %r at %d" % (c, i))

    try:
        v, end = dec(0)
    except (IndexError, ValueError) as e:
        raise ValueError(str(e))
    if end != len(data):
        raise ValueError("trailing data")
    return v


# --------------------------------------------------------------------------- torrents

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_payload(path, size):
    with open(path, "wb") as f:
        f.write(os.urandom(size))


def make_info(path, name):
    pieces = []
    with open(path, "rb") as f:
        while True:
            block = f.read(PIECE_LEN)
            if not block:
                break
            pieces.append(hashlib.sha1(block).digest())
    info = {
        "name": name,
        "length": os.path.getsize(path),
        "piece length": PIECE_LEN,
        "pieces": b"".join(pieces),
    }
    return info, hashlib.sha1(bencode(info)).digest()


def write_torrent(path, info, announce):
    meta = {
        "announce": announce,
        "created by": "hayate e2e",
        "creation date": int(time.time()),
        "info": info,
    }
    with open(path, "wb") as f:
        f.write(bencode(meta))


# --------------------------------------------------------------------------- JWT tokens

JWT_KEY_DIR = os.path.normpath(os.path.join(os.path.dirname(THIS), "..", "data", "jwt"))
JWT_KEY_FILES = {"RS256": "rsa.pem", "ES256": "p256.pem", "EdDSA": "ed25519.pem"}
# libtorrent sends a udp:// URL's path and query as ONE BEP 41 URL-data option and cuts it to
# 255 bytes (udp_tracker_connection.cpp: `std::min(request_string.size(), 255)`), so a token
# it carries must fit in 255 bytes with its path.
LIBTORRENT_URL_DATA_MAX = 255


class TokenSigner:
    """Signs announce tokens (JWS) with the committed test keys in tests/data/jwt. Each key's
    `kid` is looked up in jwks.json by its public half, so regenerated keys (make.sh) or
    renamed kids need no change here. Needs PyJWT and cryptography (install.sh)."""

    def __init__(self, key_dir):
        import jwt
        from jwt.algorithms import get_default_algorithms
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        self.jwt = jwt
        self.jwks_path = os.path.join(key_dir, "jwks.json")
        with open(self.jwks_path) as f:
            published = json.load(f)["keys"]
        algorithms = get_default_algorithms()
        self.keys = {}
        for alg, name in JWT_KEY_FILES.items():
            with open(os.path.join(key_dir, name), "rb") as f:
                private = load_pem_private_key(f.read(), password=None)
            public = json.loads(algorithms[alg].to_jwk(private.public_key()))
            fields = [k for k in ("kty", "crv", "n", "e", "x", "y") if k in public]
            kids = [k.get("kid") for k in published
                    if all(k.get(f) == public[f] for f in fields)]
            if len(kids) != 1 or not kids[0]:
                raise ValueError("%s: the public half of %s (%s) is in %d entries with a kid, "
                                 "want exactly 1" % (self.jwks_path, name, alg, len(kids)))
            self.keys[alg] = (private, kids[0])

    def sign(self, alg, info_hash, issuer, audience, lifetime=3600):
        """A token for `info_hash` (claim `infohash`: 40 hex digits), valid from now on for
        `lifetime` seconds. No `nbf` and no `typ`: libtorrent's 255 bytes (see
        LIBTORRENT_URL_DATA_MAX) leave no room for them."""
        private, kid = self.keys[alg]
        claims = {"iss": issuer, "aud": audience, "exp": int(time.time()) + lifetime,
                  "infohash": info_hash.hex()}
        return self.jwt.encode(claims, private, algorithm=alg, headers={"kid": kid, "typ": None})


# --------------------------------------------------------------------------- net helpers

def have_ipv6():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


HAVE_V6 = have_ipv6()


def ephemeral_low():
    """The first port of the kernel's ephemeral range (port-0 binds, outgoing connections)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def ports_in_use():
    """Local ports of every TCP and UDP socket on the machine (listening, bound, TIME_WAIT),
    read from /proc/net without binding anything."""
    used = set()
    for name in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open("/proc/net/" + name) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 1 and ":" in fields[1]:
                        used.add(int(fields[1].rsplit(":", 1)[1], 16))
        except (OSError, ValueError):
            continue
    return used


class PortBlock:
    """Listen ports for the clients (and opentracker, which cannot bind port 0 and report).

    Bind-then-release would race with everything else on the machine, so instead:
    ports come from below the kernel's ephemeral range, where no port-0 bind and no
    outgoing connection can land; each run holds an flock on a block of them, so
    concurrent e2e runs never share a port; a port /proc/net shows in use (bound,
    listening or in TIME_WAIT) is skipped; and no port is handed out twice in a run.
    Only a program binding that exact fixed port between the pick and the client's
    start could still collide."""

    FIRST = 10240
    SIZE = 256
    LOCK_DIR = os.path.join(tempfile.gettempdir(), "hayate-e2e-ports")

    def __init__(self):
        self.top = ephemeral_low()
        self.locks = []
        self.next = None
        self.end = None
        self.block = -1

    def _take_block(self):
        os.makedirs(self.LOCK_DIR, exist_ok=True)
        blocks = (self.top - self.FIRST) // self.SIZE
        for b in range(self.block + 1, blocks):
            f = open(os.path.join(self.LOCK_DIR, "block-%d.lock" % b), "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            self.locks.append(f)  # held (open) for the rest of the run
            self.block = b
            self.next = self.FIRST + b * self.SIZE
            self.end = self.next + self.SIZE
            return
        raise RuntimeError("no free block of %d ports in %d-%d (all locked in %s)"
                           % (self.SIZE, self.FIRST, self.top - 1, self.LOCK_DIR))

    def take(self):
        used = ports_in_use()
        while True:
            if self.next is None or self.next >= self.end:
                self._take_block()
            port = self.next
            self.next += 1
            if port not in used:
                return port


class TrackerError(Exception):
    pass


class TrackerRefusal(TrackerError):
    """The tracker answered with an error: a BEP 15 error packet or a bencoded failure reason."""

    def __init__(self, message):
        super().__init__("tracker error: %r" % message)
        self.message = message


def _udp_exchange(sock, addr, packet, tid, want_action, timeout):
    sock.settimeout(timeout)
    sock.sendto(packet, addr)
    while True:
        data, _ = sock.recvfrom(65536)
        if len(data) < 8:
            raise TrackerError("short UDP response (%d bytes): %s" % (len(data), data.hex()))
        action, rtid = struct.unpack(">II", data[:8])
        if rtid != tid:
            continue  # stray answer to an earlier retry
        if action == 3:
            raise TrackerRefusal(data[8:].decode("utf-8", "replace"))
        if action != want_action:
            raise TrackerError("action %d, wanted %d: %s" % (action, want_action, data.hex()))
        return data


def udp_connect(sock, addr, timeout=1.0):
    tid = random.getrandbits(32)
    data = _udp_exchange(sock, addr, struct.pack(">QII", UDP_PROTOCOL_ID, 0, tid), tid, 0, timeout)
    if len(data) < 16:
        raise TrackerError("connect response too short (%d bytes): %s" % (len(data), data.hex()))
    return struct.unpack(">Q", data[8:16])[0]


def udp_scrape(host, port, info_hashes, tries=3, timeout=1.0):
    """BEP 15 scrape; returns [(seeders, completed, leechers)] per hash."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    addr = (host, port)
    last = None
    for _ in range(tries):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            conn = udp_connect(s, addr, timeout)
            tid = random.getrandbits(32)
            pkt = struct.pack(">QII", conn, 2, tid) + b"".join(info_hashes)
            data = _udp_exchange(s, addr, pkt, tid, 2, timeout)
            body = data[8:]
            if len(body) < 12 * len(info_hashes):
                raise TrackerError("scrape response too short: %s" % data.hex())
            return [struct.unpack(">III", body[12 * i:12 * i + 12]) for i in range(len(info_hashes))]
        except (socket.timeout, OSError, TrackerError) as e:
            last = e
        finally:
            s.close()
    raise TrackerError("UDP scrape of %s:%d failed: %r" % (host, port, last))


def bep41_options(url_data):
    """BEP 41 URL-data options carrying `url_data` (path and query), in pieces of at most
    255 bytes as one option allows (libtorrent splits the same way); none for b""."""
    out = b""
    for i in range(0, len(url_data), 255):
        piece = url_data[i:i + 255]
        out += struct.pack(">BB", 2, len(piece)) + piece
    return out


def udp_announce(host, port, info_hash, peer_id, event, left, my_port, timeout=1.0, tries=3,
                 url_data=b""):
    """BEP 15 announce (98 bytes, then `url_data` as BEP 41 options); returns (interval,
    leechers, seeders, [(ip, port)]). A refusal raises TrackerRefusal at once (no retry)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    addr = (host, port)
    last = None
    for _ in range(tries):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            conn = udp_connect(s, addr, timeout)
            tid = random.getrandbits(32)
            pkt = struct.pack(">QII20s20sQQQIIIiH", conn, 1, tid, info_hash, peer_id, 0, left, 0,
                              event, 0, random.getrandbits(32), 50, my_port)
            assert len(pkt) == 98
            pkt += bep41_options(url_data)
            data = _udp_exchange(s, addr, pkt, tid, 1, timeout)
            if len(data) < 20:
                raise TrackerError("announce response too short: %s" % data.hex())
            interval, leechers, seeders = struct.unpack(">III", data[8:20])
            body = data[20:]
            size = 18 if fam == socket.AF_INET6 else 6
            if len(body) % size:
                raise TrackerError("announce response: %d peer bytes is not a multiple of %d: %s"
                                   % (len(body), size, data.hex()))
            peers = []
            for i in range(0, len(body), size):
                ip = socket.inet_ntop(fam, body[i:i + size - 2])
                peers.append((ip, struct.unpack(">H", body[i + size - 2:i + size])[0]))
            return interval, leechers, seeders, peers
        except TrackerRefusal:
            raise
        except (socket.timeout, OSError, TrackerError) as e:
            last = e
        finally:
            s.close()
    raise TrackerError("UDP announce to %s:%d failed: %r" % (host, port, last))


def wait_udp_ready(host, port, deadline, proc=None):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TrackerError("tracker exited with code %s" % proc.poll())
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            udp_connect(s, (host, port), 0.3)
            return
        except (socket.timeout, OSError, TrackerError) as e:
            last = e
            time.sleep(0.1)
        finally:
            s.close()
    raise TrackerError("no BEP 15 connect answer from %s:%d: %r" % (host, port, last))


def wait_tcp_ready(host, port, deadline):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    while time.monotonic() < deadline:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(0.3)
        try:
            s.connect((host, port))
            return True
        except OSError:
            time.sleep(0.1)
        finally:
            s.close()
    return False


_no_proxy_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_scrape(base, info_hash, timeout=3.0):
    """GET /scrape. Returns (status, body) or raises OSError."""
    url = base + "/scrape?info_hash=" + urllib.parse.quote_from_bytes(info_hash, safe="")
    try:
        with _no_proxy_opener.open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_announce(announce_url, info_hash, peer_id, port, left, event, timeout=3.0):
    """BEP 3 GET announce to `announce_url` (which may carry a query, e.g. `?jwt=`, that the
    parameters are appended to with `&`, as clients do); returns the decoded reply dict.
    A `failure reason` raises TrackerRefusal."""
    params = [("info_hash", info_hash), ("peer_id", peer_id), ("port", str(port).encode()),
              ("uploaded", b"0"), ("downloaded", b"0"), ("left", str(left).encode()),
              ("compact", b"1"), ("event", event.encode())]
    query = "&".join("%s=%s" % (k, urllib.parse.quote_from_bytes(v, safe="")) for k, v in params)
    url = announce_url + ("&" if "?" in announce_url else "?") + query
    try:
        with _no_proxy_opener.open(url, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        d = bdecode(body)
    except ValueError as e:
        raise TrackerError("HTTP announce: status %d, body not bencode (%s): %r"
                           % (status, e, body[:200]))
    if not isinstance(d, dict):
        raise TrackerError("HTTP announce: status %d, reply not a dict: %r" % (status, body[:200]))
    if b"failure reason" in d:
        raise TrackerRefusal(d[b"failure reason"].decode("utf-8", "replace"))
    if status != 200:
        raise TrackerError("HTTP announce: status %d: %r" % (status, body[:200]))
    return d


def host_of(fam):
    return "127.0.0.1" if fam == "4" else "::1"


def url_host(fam):
    return "127.0.0.1" if fam == "4" else "[::1]"


# --------------------------------------------------------------------------- processes

def child_env(home):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,::1,localhost"
    env["HOME"] = home
    env.setdefault("LANG", "C.UTF-8")
    return env


class Proc:
    def __init__(self, name, cmd, log_path, cwd=None, env=None, extra_logs=()):
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self.extra_logs = list(extra_logs)
        self.logf = open(log_path, "ab")
        self.logf.write(("$ %s\n" % " ".join(cmd)).encode())
        self.logf.flush()
        self.p = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
            cwd=cwd, env=env, start_new_session=True)

    def poll(self):
        return self.p.poll()

    def stop(self):
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            try:
                os.killpg(self.p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.p.wait(wait)
                # the leader is gone; make sure nothing else of its group lingers
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                break
            except subprocess.TimeoutExpired:
                continue
        self.logf.close()


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def tail(path, lines=40, start=0):
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)
    text = data.decode("utf-8", "replace").replace("\r", "\n")
    out = []
    last_shape = None
    for l in text.split("\n"):
        if not l.strip():
            continue
        # collapse runs of progress lines that differ only in their numbers
        shape = re.sub(r"[0-9.]+", "#", l.strip())
        if shape == last_shape:
            out[-1] = l
            continue
        last_shape = shape
        out.append(l)
    return "\n".join(out[-lines:])


# --------------------------------------------------------------------------- clients

class Endpoint:
    """Everything a client needs to start in one role of one case."""

    def __init__(self, workdir, torrent, data_dir, name, port, aux_port, fam, proto, url, role,
                 ip):
        self.ip = ip  # the loopback address this client binds to (and announces from)
        self.workdir = workdir
        self.torrent = torrent
        self.data_dir = data_dir
        self.name = name
        self.port = port
        self.aux_port = aux_port
        self.fam = fam
        self.proto = proto
        self.url = url
        self.role = role

    @property
    def file(self):
        return os.path.join(self.data_dir, self.name)


class Libtorrent:
    name = "libtorrent"

    def __init__(self, python):
        self.python = python

    def command(self, ep):
        return [self.python, THIS, "lt-worker", "--torrent", ep.torrent, "--save", ep.data_dir,
                "--port", str(ep.port), "--role", ep.role,
                "--ip4", ep.ip if ep.fam == "4" else "127.0.0.1"], []


class Transmission:
    name = "transmission"

    def command(self, ep):
        conf = os.path.join(ep.workdir, "transmission-config")
        os.makedirs(conf, exist_ok=True)
        settings = {
            "dht-enabled": False,
            "lpd-enabled": False,
            "pex-enabled": False,
            "utp-enabled": False,
            "port-forwarding-enabled": False,
            "blocklist-enabled": False,
            "rpc-enabled": False,
            "peer-port": ep.port,
            "peer-port-random-on-start": False,
            # Transmission binds its HTTP announces to bind-address-ipv4 when that is set, else
            # to bind-address-ipv6: leave the IPv4 one unset for IPv6 cases.
            "bind-address-ipv4": ep.ip if ep.fam == "4" else "0.0.0.0",
            "bind-address-ipv6": "::1",
            "download-dir": ep.data_dir,
            "incomplete-dir-enabled": False,
            "rename-partial-files": False,
            "ratio-limit-enabled": False,
            "idle-seeding-limit-enabled": False,
            "speed-limit-up-enabled": False,
            "speed-limit-down-enabled": False,
            "message-level": 3,
        }
        with open(os.path.join(conf, "settings.json"), "w") as f:
            json.dump(settings, f, indent=1)
        cmd = ["transmission-cli", "-g", conf, "-w", ep.data_dir, "-p", str(ep.port), "-M"]
        if ep.role == "seed":
            cmd.append("-v")
        cmd.append(ep.torrent)
        return cmd, []


class Aria2:
    name = "aria2"

    def command(self, ep):
        alog = os.path.join(ep.workdir, "aria2.log")
        cmd = [
            "aria2c", "--no-conf=true", "--dir=" + ep.data_dir, "--listen-port=%d" % ep.port,
            "--enable-peer-exchange=false", "--bt-enable-lpd=false", "--enable-dht6=false",
            "--seed-ratio=0.0", "--check-integrity=true", "--file-allocation=none",
            "--summary-interval=0", "--console-log-level=notice", "--enable-rpc=false",
            "--log=" + alog, "--log-level=debug", "--stop-with-process=%d" % os.getpid(),
            "--bt-stop-timeout=0", "--bt-tracker-connect-timeout=5", "--bt-tracker-timeout=5",
        ]
        if ep.fam == "4":
            cmd.append("--interface=" + ep.ip)
        if ep.proto == "udp":
            # aria2 only speaks UDP trackers through its DHT socket.  No entry point and a
            # fresh (empty) routing table keep the DHT from finding anything, and
            # check_peer_source proves from the log that it did not.
            cmd += ["--enable-dht=true", "--dht-listen-port=%d" % ep.aux_port,
                    "--dht-file-path=" + os.path.join(ep.workdir, "dht.dat")]
        else:
            cmd += ["--enable-dht=false"]
        cmd.append(ep.torrent)
        return cmd, [alog]

    @staticmethod
    def first_dial(text, seeder):
        """Where aria2's debug log first dials the seeder's announced address (or None)."""
        host = seeder.ip
        return re.search(r"(?:Checkout peer|Connecting to) (?:%s|\[%s\]):%d\b"
                         % (re.escape(host), re.escape(host), seeder.port), text)

    @staticmethod
    def dialled(ep, seeder):
        """Whether aria2 ever dialled the seeder (from its debug log)."""
        return Aria2.first_dial(read_text(os.path.join(ep.workdir, "aria2.log")),
                                seeder) is not None

    @staticmethod
    def check_peer_source(ep, seeder):
        """Why aria2's debug log does not show the seeder coming from the tracker (None if
        it does): a tracker reply must be processed before aria2 first dials the seeder at
        its announced address, and its DHT must have sent and received no message at all
        (with DHT on for UDP trackers, that is what rules the DHT out as a source)."""
        path = os.path.join(ep.workdir, "aria2.log")
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError as e:
            return "cannot read its log: %s" % e
        dht = re.findall(r"\[DHT\w+\.cc:\d+\] (?:Message sent|Message received|Received \d+ "
                         r"peers)[^\n]*", text)
        if dht:
            return "its DHT exchanged messages, so the peer may not be the tracker's: %s" % dht[:3]
        reply = re.search(r"Now processing (?:UDP )?tracker response", text)
        host = seeder.ip
        dial = Aria2.first_dial(text, seeder)
        if not dial:
            return "never dialled the seeder at %s:%d (see %s)" % (host, seeder.port, path)
        if not reply or reply.start() > dial.start():
            return ("dialled the seeder %s:%d before processing any tracker reply (see %s)"
                    % (host, seeder.port, path))
        return None


class Rtorrent:
    name = "rtorrent"
    # rtorrent 0.9.8 queues `completed` for a later announce and, when made to announce
    # early, sends event-less updates with left=0 instead: it shows up as one more seeder
    # but never bumps `downloaded`.
    sends_completed = False

    def command(self, ep):
        sess = os.path.join(ep.workdir, "rtorrent-session")
        os.makedirs(sess, exist_ok=True)
        rlog = os.path.join(ep.workdir, "rtorrent.log")
        # settings with several arguments do not parse with -o, so use an rc file
        lines = [
            "session.path.set = " + sess,
            "directory.default.set = " + ep.data_dir,
            "network.port_range.set = %d-%d" % (ep.port, ep.port),
            "network.port_random.set = no",
            "dht.mode.set = disable",
            "protocol.pex.set = no",
            "trackers.use_udp.set = yes",
            "log.open_file = e2e, " + rlog,
            "log.add_output = info, e2e",
            "log.add_output = tracker_debug, e2e",
            "system.daemon.set = true",
            # rtorrent only queues the `completed` event for the next regular announce
            # (30 minutes away) and d.tracker_announce in event.download.finished comes too
            # early to send anything; so once complete, announce every 3 s.  As a seeder this
            # also makes it learn the leecher from the tracker and dial it (SEEDER_DIALS).
            'schedule2 = e2e_announce, 3, 3, "d.multicall2=complete,d.tracker_announce="',
        ]
        if ep.fam == "4":
            lines.append("network.bind_address.set = " + ep.ip)
        rc = os.path.join(ep.workdir, "rtorrent.rc")
        with open(rc, "w") as f:
            f.write("\n".join(lines) + "\n")
        return ["rtorrent", "-n", "-o", "import=" + rc, ep.torrent], [rlog]


class Ctorrent:
    name = "ctorrent"
    # As a seeder, ctorrent sends its first announce after checking only the first piece
    # (left = the rest of the file) and the next one only at the tracker's interval
    # (30 minutes), so for the whole case the tracker rightly counts it as a leecher.
    seeds_as_leecher = True

    def command(self, ep):
        cmd = ["ctorrent", "-v", "-e", "12", "-s", ep.file, "-p", str(ep.port),
               "-b", os.path.join(ep.workdir, "ctorrent.bf"), "-M", "20"]
        # ctorrent drops every peer whose IP equals its own (port ignored), so it needs an
        # address of its own; -i binds its tracker connections too.
        cmd += ["-i", ep.ip if ep.fam == "4" else "127.0.0.1"]
        cmd.append(ep.torrent)
        return cmd, []


# --------------------------------------------------------------------------- cases

class Case:
    def __init__(self, name, fam, seed, leech, setup=None, **opts):
        self.name = name
        self.fam = fam
        self.seed = seed  # (client name, proto)
        self.leech = leech
        # None: the plain tracker every ordinary case shares; else a key of TRACKER_SETUPS, the
        # tracker of its own (with its hooks configured) the case runs against
        self.setup = setup
        self.opts = opts

    @property
    def protos(self):
        return {self.seed[1], self.leech[1]}


CLIENTS = ["libtorrent", "transmission", "aria2", "rtorrent", "ctorrent"]

# (client, proto, fam) -> roles it can take on loopback, as found on Debian 12
# (Transmission 3.00, aria2 1.36, rtorrent 0.9.8, ctorrent dnh3.3.2, libtorrent 2.1):
#   transmission: drops loopback peers handed out by a tracker -> seed only; its UDP
#     tracker code needs a global IPv6 address for IPv6 -> no udp6 ("Could not connect").
#   aria2: UDP trackers only through its IPv4 DHT socket -> no udp6.
#   rtorrent: reads the 18-byte IPv6 peers of a BEP 15 reply as IPv4 ones -> no udp6 leech.
#   ctorrent: HTTP trackers only, IPv4 only (exits at once on an IPv6 URL).  Given a
#     udp:// URL it speaks HTTP to that host:port, so "udp" ctorrent cases pass whenever
#     the tracker serves HTTP on the UDP port: they are left out, they test nothing.
CAPS = {}


def _cap(client, roles, combos):
    for c in combos:
        CAPS[(client,) + c] = set(roles)


ALL = [("udp", "4"), ("http", "4"), ("udp", "6"), ("http", "6")]
_cap("libtorrent", ["seed", "leech"], ALL)
_cap("transmission", ["seed"], [("udp", "4"), ("http", "4"), ("http", "6")])
_cap("aria2", ["seed", "leech"], [("udp", "4"), ("http", "4"), ("http", "6")])
_cap("rtorrent", ["seed", "leech"], [("udp", "4"), ("http", "4"), ("http", "6")])
_cap("rtorrent", ["seed"], [("udp", "6")])
_cap("ctorrent", ["seed", "leech"], [("http", "4")])

# (seeder, leecher) pairs whose peer-wire exchange stalls whatever the tracker does
BAD_PAIRS = {("rtorrent", "aria2"), ("ctorrent", "aria2")}

# Seeders that connect to the leecher themselves: the rtorrent seeder re-announces every
# few seconds (see Rtorrent), learns the leecher from the tracker and dials it, which lets
# Transmission leech on loopback (it only refuses to dial loopback peers itself).
SEEDER_DIALS = {("rtorrent", "transmission")}

MIXED = [  # (family, seeder proto, seeder, leecher proto, leecher)
    ("4", "udp", "libtorrent", "http", "aria2"),
    ("4", "http", "transmission", "udp", "libtorrent"),
    ("4", "udp", "rtorrent", "http", "ctorrent"),
    ("6", "udp", "libtorrent", "http", "aria2"),
    ("6", "http", "transmission", "udp", "libtorrent"),
    ("6", "udp", "rtorrent", "http", "libtorrent"),
]


# Cases of the announce pipeline's hooks, each against a tracker with that hook on (see
# TRACKER_SETUPS). Options:
#   token: (algorithm, issuer, audience) of the token in the torrents' announce URLs;
#   udp_path: the path of the udp:// announce URL (default /announce);
#   probe_token: algorithm of the token in the harness's own probe announce;
#   refusals: requests the harness sends first, each of which the tracker must refuse;
#   denied: (client, proto) started before the leecher, which the tracker must refuse.
JWT_ISSUER = "https://issuer.example"
JWT_AUDIENCE = "hayate"
# The one-letter issuer and audience and the path `/` are what makes an EdDSA token fit
# libtorrent's 255 bytes of UDP URL data exactly (see LIBTORRENT_URL_DATA_MAX): with
# "/announce?jwt=", or JWT_ISSUER, it would be cut and refused.
JWT_SHORT_ISSUER = "i"
JWT_SHORT_AUDIENCE = "h"
DENIED_PREFIX = "A2-"  # aria2 1.36's peer_id is "A2-1-36-0-" and 10 random bytes
HOOK_CASES = [
    Case("jwt-udp4-libtorrent-seed-libtorrent-leech", "4", ("libtorrent", "udp"),
         ("libtorrent", "udp"), setup="jwt-short",
         token=("EdDSA", JWT_SHORT_ISSUER, JWT_SHORT_AUDIENCE), udp_path="/",
         probe_token="RS256", refusals=["udp-no-token", "udp-other-hash"]),
    Case("jwt-http4-libtorrent-seed-aria2-leech", "4", ("libtorrent", "http"),
         ("aria2", "http"), setup="jwt", token=("RS256", JWT_ISSUER, JWT_AUDIENCE),
         probe_token="ES256", refusals=["http-no-token", "http-other-hash"]),
    Case("clientlist-deny-http4-libtorrent-seed-libtorrent-leech-aria2-refused", "4",
         ("libtorrent", "http"), ("libtorrent", "http"), setup="clientlist",
         refusals=["udp-denied-client"], denied=("aria2", "http")),
]


# A case against a tracker restarted in the middle (hayate only, on a tracker of its own, see
# TRACKER_SETUPS): the seeder announces, hayate upgrades itself in place (SIGUSR2: the new
# process takes the sockets and, through the snapshot in [state] directory, the swarm), and
# only then does the leecher start. The new process must hand out the seeder, which must not
# have announced again (check_no_reannounce). Options:
#   restart: "sigusr2" (the only way the harness restarts);
#   interval: the announce interval the tracker is given, which the probe's reply must carry.
RESTART_CASE = "restart-udp4-libtorrent-seed-libtorrent-leech"
# libtorrent announces again only at the tracker's interval (and never sooner than its
# min_announce_interval, 5 minutes): 30 minutes keeps the seeder quiet for the whole case,
# so a seeder the new process hands out can only have come through the snapshot.
RESTART_INTERVAL = 1800
RESTART_CASES = [
    Case(RESTART_CASE, "4", ("libtorrent", "udp"), ("libtorrent", "udp"), setup="restart",
         restart="sigusr2", interval=RESTART_INTERVAL),
]


# Cases against a cluster (hayate only): one redis-server of the case's own (standalone, on a
# unix socket in the case's work directory) and two hayate nodes sharing their swarms through
# it ([cluster], node_id "a" and "b"). The seeder's torrent names only node A, the leecher's
# only node B: node B must hand out the seeder, which never announced to it (see main and
# run_setup for the start, run_case and check_cluster for the checks). Each case is its own
# setup, so it gets a fresh Redis and fresh nodes. Options:
#   cluster: True;
#   interval: the announce interval the nodes are given, which the probe's reply must carry.
CLUSTER_SYNC_MS = 200
# A node reads the other nodes' peers of a torrent only once asked about it, so the leecher
# may need a second announce to see the seeder: a short interval brings it soon. libtorrent
# announces again only after its own min_announce_interval (5 minutes) whatever the tracker
# says, so the seeder's one announce must last the case: a peer lifetime of those 5 minutes.
CLUSTER_INTERVAL = 2
CLUSTER_MIN_INTERVAL = 1
CLUSTER_PEER_LIFETIME = 300
# How long node B may take to hand out the seeder once the probe first asks about the torrent:
# "within about two sync intervals", and a margin for a loaded machine.
CLUSTER_PROBE_WITHIN = 10.0
CLUSTER_NODES = ("a", "b")  # node_id of the seeder's node, then of the leecher's
CLUSTER_CASES = [
    Case("cluster-%s4-libtorrent-seed-aria2-leech" % proto, "4", ("libtorrent", proto),
         ("aria2", proto), setup="cluster-%s4" % proto, cluster=True, interval=CLUSTER_INTERVAL)
    for proto in ("udp", "http")
]


def case_name(proto, fam, s, l):
    return "%s%s-%s-seed-%s-leech" % (proto, fam, s, l)


def can(client, role, proto, fam):
    return role in CAPS.get((client, proto, fam), ())


def all_cases(all_pairs=False):
    cases = []
    for proto, fam in ALL:
        for s in CLIENTS:
            for l in CLIENTS:
                if s == l and s != "libtorrent":
                    continue
                leech_ok = can(l, "leech", proto, fam) or (
                    (s, l) in SEEDER_DIALS and can(l, "seed", proto, fam))
                if not all_pairs and not (can(s, "seed", proto, fam) and leech_ok
                                          and (s, l) not in BAD_PAIRS):
                    continue
                cases.append(Case(case_name(proto, fam, s, l), fam, (s, proto), (l, proto)))
    # mixed: seeder announces over one protocol, leecher over the other, same swarm
    for fam, sp, s, lp, l in MIXED:
        if all_pairs or (can(s, "seed", sp, fam) and can(l, "leech", lp, fam)):
            cases.append(Case("mixed%s-%s-%s-seed-%s-%s-leech" % (fam, sp, s, lp, l),
                              fam, (s, sp), (l, lp)))
    return cases + HOOK_CASES + RESTART_CASES + CLUSTER_CASES


# Cases run by default: each client in each role it can take, in each protocol and
# family it supports, a pair without libtorrent per protocol where one works, and
# libtorrent-vs-libtorrent (two processes) only as a baseline.
DEFAULT = [
    "udp4-libtorrent-seed-libtorrent-leech",
    "udp4-libtorrent-seed-aria2-leech",
    "udp4-libtorrent-seed-rtorrent-leech",
    "udp4-transmission-seed-libtorrent-leech",
    "udp4-aria2-seed-libtorrent-leech",
    "udp4-rtorrent-seed-libtorrent-leech",
    "udp4-transmission-seed-aria2-leech",
    "udp4-rtorrent-seed-transmission-leech",
    "http4-libtorrent-seed-libtorrent-leech",
    "http4-libtorrent-seed-aria2-leech",
    "http4-libtorrent-seed-rtorrent-leech",
    "http4-libtorrent-seed-ctorrent-leech",
    "http4-transmission-seed-libtorrent-leech",
    "http4-aria2-seed-libtorrent-leech",
    "http4-rtorrent-seed-libtorrent-leech",
    "http4-ctorrent-seed-libtorrent-leech",
    "http4-rtorrent-seed-ctorrent-leech",
    "http4-aria2-seed-rtorrent-leech",
    "udp6-libtorrent-seed-libtorrent-leech",
    "udp6-rtorrent-seed-libtorrent-leech",
    "http6-libtorrent-seed-libtorrent-leech",
    "http6-transmission-seed-libtorrent-leech",
    "http6-libtorrent-seed-aria2-leech",
    "http6-libtorrent-seed-rtorrent-leech",
    "http6-aria2-seed-libtorrent-leech",
    "http6-rtorrent-seed-transmission-leech",
    "mixed4-udp-libtorrent-seed-http-aria2-leech",
    "mixed4-http-transmission-seed-udp-libtorrent-leech",
    "mixed4-udp-rtorrent-seed-http-ctorrent-leech",
    "mixed6-udp-libtorrent-seed-http-aria2-leech",
    "mixed6-http-transmission-seed-udp-libtorrent-leech",
    "mixed6-udp-rtorrent-seed-http-libtorrent-leech",
] + [c.name for c in HOOK_CASES + RESTART_CASES + CLUSTER_CASES]


def select_cases(args):
    matrix = "all" if args.all_pairs else args.matrix
    cases = all_cases(all_pairs=(matrix == "all"))
    if matrix == "default":
        by_name = {c.name: c for c in cases}
        cases = [by_name[n] for n in DEFAULT]
    if args.cases:
        pats = [p.strip() for p in args.cases.split(",") if p.strip()]

        def match(n):
            for p in pats:
                if any(ch in p for ch in "*?["):
                    if fnmatch.fnmatchcase(n, p):
                        return True
                elif p in n:
                    return True
            return False

        cases = [c for c in cases if match(c.name)]
    return cases


# --------------------------------------------------------------------------- trackers

def hayate_sections(binary):
    """Top-level sections of `hayate --print-config`, or None if it cannot tell."""
    try:
        r = subprocess.run([binary, "--print-config"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return set(re.findall(r"^\[([A-Za-z0-9_]+)\]", r.stdout.decode("utf-8", "replace"), re.M))


def parse_addrs(text):
    """`127.0.0.1:4000, [::1]:4000` (hayate's Debug of its bound addresses) -> {fam: port}."""
    out = {}
    for host, port in re.findall(r"(\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:.]+\]):(\d+)", text):
        out["6" if host.startswith("[") else "4"] = int(port)
    return out


def become_subreaper():
    """Makes orphaned descendants (hayate's new process once the old one exits) children of
    this process, so it can reap them and read how they ended (prctl PR_SET_CHILD_SUBREAPER)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # 36 = PR_SET_CHILD_SUBREAPER
        raise TrackerError("prctl(PR_SET_CHILD_SUBREAPER): %s" % os.strerror(ctypes.get_errno()))


def udp_socket_holders(port):
    """Pids holding a UDP socket bound to local `port` (from /proc/net/udp{,6} and each
    process's fds)."""
    inodes = set()
    for name in ("udp", "udp6"):
        try:
            with open("/proc/net/" + name) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add("socket:[%s]" % fields[9])
        except (OSError, ValueError):
            continue
    pids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
            if any(os.readlink("/proc/%s/fd/%s" % (pid, fd)) in inodes for fd in fds):
                pids.add(int(pid))
        except OSError:
            continue
    return pids


class Successor:
    """hayate's new process after a SIGUSR2 upgrade: not started by this harness, so neither a
    Popen nor (until the old process exits and it is re-parented here, see become_subreaper)
    a child of ours. Identified by pid and start time, so a reused pid is never mistaken for
    it."""

    def __init__(self, pid):
        self.pid = pid
        self.start_time = self._stat_field(22)
        self.status = None  # how it ended, once known

    def _stat_field(self, number):
        """Field `number` (1-based, as in proc(5): 3 = state, 22 = start time) of its stat."""
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                # the command name (field 2) may hold spaces: split after its closing paren
                return f.read().rsplit(")", 1)[1].split()[number - 3]
        except (OSError, IndexError):
            return None

    def exited(self):
        """None while it runs, else how it ended."""
        if self.status is not None:
            return self.status
        try:
            pid, code = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.status = "exited: %s" % (
                    "code %d" % os.waitstatus_to_exitcode(code) if os.WIFEXITED(code)
                    else "signal %d" % os.WTERMSIG(code))
                return self.status
        except ChildProcessError:
            pass  # not (yet) re-parented to us: look in /proc
        state = self._stat_field(3)
        if state is None or self._stat_field(22) != self.start_time:
            self.status = "is gone (pid %d no longer in /proc)" % self.pid
        elif state in ("Z", "X"):
            self.status = "exited (a zombie, not ours to reap)"
        return self.status

    def stop(self, grace=10.0):
        """SIGTERM, then SIGKILL after `grace` seconds; returns what happened if it was not a
        clean exit (None when it stopped with code 0 or had already been reported gone)."""
        if self.exited():
            return None
        os.kill(self.pid, signal.SIGTERM)
        end = time.monotonic() + grace
        while time.monotonic() < end:
            if self.exited():
                return None if self.status == "exited: code 0" else \
                    "the new process %d %s after SIGTERM" % (self.pid, self.status)
            time.sleep(0.05)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for _ in range(100):
            if self.exited():
                break
            time.sleep(0.05)
        return "the new process %d did not stop within %.0f s of SIGTERM: killed" % (
            self.pid, grace)


class Tracker:
    """The tracker under test, started on ports it reports itself.

    hayate and the mini tracker bind port 0 everywhere and say what they bound (hayate's
    "hayate serving" log line, the mini tracker's "ports" line); opentracker cannot, so it
    gets a port from the run's PortBlock and one more try on another port if it exits at
    start (a bind failure)."""

    def __init__(self, kind, binary, workdir, want_http, want_v6, info_hashes, log_level, ports,
                 setup=None, extra_config="", label=None):
        self.kind = kind
        self.setup = setup  # None, or the TRACKER_SETUPS key this tracker was started for
        self.label = label  # a cluster node's name ("node-a"), for its files and messages
        self.extra_config = extra_config  # TOML sections appended to hayate's config
        self.binary = binary
        self.workdir = workdir
        self.want_http = want_http
        self.want_v6 = want_v6
        self.info_hashes = info_hashes
        self.log_level = log_level
        self.port_block = ports
        self.ports = {}  # (proto, fam) -> port, once known
        self.metrics_port = None
        self.marks = 0  # metrics marker datagrams sent (see error_counts)
        self.suffix = "-" + (label or setup) if (label or setup) else ""
        self.log_path = os.path.join(workdir, "tracker%s.log" % self.suffix)
        self.proc = None
        self.fixed_port = None
        # After a SIGUSR2 upgrade (see restart): the process that serves now, started by the
        # old one, and the error counts the old one had reached (metrics start from zero in
        # the new process; error_counts adds these so the readings stay cumulative).
        self.successor = None
        self.carried_errors = {}

    def start(self, deadline):
        """Starts the tracker and waits until every address answers; raises TrackerError."""
        tries = 2 if self.kind == "opentracker" else 1
        for attempt in range(tries):
            self.proc = self._spawn()
            try:
                self._wait_ready(deadline)
                return
            except TrackerError as e:
                if self.proc.poll() is None or attempt + 1 == tries:
                    raise
                log("opentracker exited at start on port %d (%s); one more try on another port"
                    % (self.fixed_port, e))

    def _spawn(self):
        env = child_env(os.environ.get("HOME", self.workdir))
        fams = ["4", "6"] if self.want_v6 else ["4"]
        if self.kind == "hayate":
            cfg = os.path.join(self.workdir, "hayate%s.toml" % self.suffix)
            any_port = ", ".join('"%s:0"' % url_host(f) for f in fams)
            sections = hayate_sections(self.binary)
            text = "[udp]\naddresses = [%s]\n" % any_port
            if self.want_http:
                if sections is not None and "http" not in sections:
                    log("warning: %s --print-config has no [http] section" % self.binary)
                text += "\n[http]\naddresses = [%s]\n" % any_port
            elif sections is not None and "http" in sections:
                # known to the binary: keep it off rather than on its default 0.0.0.0:6969
                text += "\n[http]\naddresses = []\n"
            text += "\n[workers]\ncount = 2\n"
            if sections is not None and "metrics" in sections:
                # a snapshot every 100 ms, so the per-case error check waits little
                text += '\n[metrics]\naddress = "127.0.0.1:0"\ninterval_ms = 100\n'
            if self.extra_config:
                text += "\n" + self.extra_config
            with open(cfg, "w") as f:
                f.write(text)
            log("tracker config %s:\n%s" % (cfg, text.rstrip()))
            env.setdefault("RUST_LOG", self.log_level)
            cmd = [self.binary, "--config", cfg]
        elif self.kind == "opentracker":
            root = os.path.join(self.workdir, "opentracker-root")
            os.makedirs(root, exist_ok=True)
            os.chmod(self.workdir, 0o755)
            os.chmod(root, 0o755)
            with open(os.path.join(root, "whitelist.txt"), "w") as f:
                for h in self.info_hashes:
                    f.write(h.hex() + "\n")
            os.chmod(os.path.join(root, "whitelist.txt"), 0o644)
            self.fixed_port = port = self.port_block.take()
            # Debian's opentracker is an IPv4-only build that serves only white-listed hashes
            cmd = [self.binary or "opentracker", "-i", "127.0.0.1", "-p", str(port), "-P",
                   str(port), "-d", root, "-w", "whitelist.txt"]
        elif self.kind == "mini":
            cmd = [sys.executable, THIS, "mini-tracker"] + (["--v6"] if self.want_v6 else [])
        else:
            raise ValueError(self.kind)
        return Proc("tracker", cmd, self.log_path, cwd=self.workdir, env=env)

    def _read_ports(self, deadline):
        """Waits for the line where the tracker says what it bound."""
        if self.kind == "opentracker":
            self.ports = {("udp", "4"): self.fixed_port}
            if self.want_http:
                self.ports[("http", "4")] = self.fixed_port
            return
        pattern = (r"hayate serving .*?udp=\[(.*?)\] http=\[(.*?)\] metrics=(\S+)"
                   if self.kind == "hayate" else r"\] ports udp=\[(.*?)\] http=\[(.*)\]$")
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                m = re.search(pattern, f.read().decode("utf-8", "replace"), re.M)
            if m:
                for proto, text in (("udp", m.group(1)), ("http", m.group(2))):
                    for fam, port in parse_addrs(text).items():
                        self.ports[(proto, fam)] = port
                if self.kind == "hayate" and m.group(3).startswith("Some("):
                    self.metrics_port = parse_addrs(m.group(3)).get("4")
                return
            if self.proc.poll() is not None:
                raise TrackerError("tracker exited with code %s before saying what it bound"
                                   % self.proc.poll())
            time.sleep(0.1)
        raise TrackerError("the tracker never logged the addresses it bound (%s)"
                           % self.log_path)

    def _wait_ready(self, deadline):
        self._read_ports(deadline)
        fams = ["4", "6"] if self.want_v6 else ["4"]
        for fam in fams:
            if ("udp", fam) not in self.ports:
                raise TrackerError("the tracker bound no UDP address for IPv%s" % fam)
            wait_udp_ready(host_of(fam), self.ports[("udp", fam)], deadline, self.proc)
        if self.want_http:
            for fam in fams:
                if ("http", fam) not in self.ports:
                    raise TrackerError("the tracker bound no HTTP address for IPv%s" % fam)
                if not wait_tcp_ready(host_of(fam), self.ports[("http", fam)], deadline):
                    raise TrackerError("nothing accepts TCP on %s:%d"
                                       % (url_host(fam), self.ports[("http", fam)]))

    def port(self, proto, fam):
        return self.ports[(proto, fam)]

    def url(self, proto, fam):
        return "%s://%s:%d/announce" % (proto, url_host(fam), self.port(proto, fam))

    def log_offset(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def exited(self):
        """None while the tracker serves (after an upgrade: the new process), else how it
        ended."""
        if self.successor is not None:
            return self.successor.exited()
        if self.proc is None or self.proc.poll() is None:
            return None
        return "exit code %s" % self.proc.poll()

    def stop(self):
        # The new process of an upgrade first, with SIGTERM, so it stops as it would under
        # an operator (writing its snapshot); then the first one's process group, which also
        # takes whatever of the group is left (the new process is in it too).
        if self.successor is not None:
            how = self.successor.stop()
            if how:
                log("tracker: %s" % how)
        if self.proc is not None:
            self.proc.stop()
        if self.successor is not None and not self.successor.exited():
            log("tracker: ERROR: the new process %d still runs after SIGTERM and SIGKILL"
                % self.successor.pid)

    def restart(self, deadline):
        """Upgrades hayate in place with SIGUSR2 and follows it to the new process: the old
        one must start it (log: `upgrade: started the new process pid=N`), the new one must
        serve on the same ports (a second `hayate serving` line), the old one must say
        `handed over to the new process` and exit with 0, and the new one must hold the UDP
        socket and answer BEP 15. From the first line on, `stop` stops the new process too,
        so none outlives the run even when this fails. Returns (old pid, new pid, the log's
        lines about the snapshot written and restored); raises TrackerError saying which step
        failed. Reads the error counters first (one marker datagram: the caller allows it)."""
        if self.kind != "hayate":
            raise TrackerError("only hayate restarts by SIGUSR2")
        carried = self.error_counts() or {}
        old_pid = self.proc.p.pid
        old_ports = dict(self.ports)
        old_metrics = self.metrics_port
        # The new process is the old one's child; once the old one exits it is re-parented to
        # the nearest subreaper. Being that subreaper lets this harness reap it and read its
        # exit status (here PID 1 may reap nobody, leaving a zombie).
        become_subreaper()
        off = self.log_offset()
        os.kill(old_pid, signal.SIGUSR2)

        def wait_for(pattern, what, start=off):
            """Waits for `pattern` in the log after byte `start`; returns (end byte, match)."""
            while True:
                with open(self.log_path, "rb") as f:
                    f.seek(start)
                    text = f.read().decode("ascii", "replace")  # tracing writes no colours
                failed = re.search(r"upgrade failed[^\n]*", text)
                if failed:
                    raise TrackerError("after SIGUSR2 the tracker logged: %s" % failed.group(0))
                m = re.search(pattern, text, re.M)
                if m:
                    return start + m.end(), m
                if self.proc.poll() is not None and self.successor is None:
                    raise TrackerError("the tracker (pid %d) exited with code %s before %s"
                                       % (old_pid, self.proc.poll(), what))
                if time.monotonic() >= deadline:
                    raise TrackerError("after SIGUSR2 the tracker's log never showed %s (%s)"
                                       % (what, self.log_path))
                time.sleep(0.05)

        at, m = wait_for(r"upgrade: started the new process pid=(\d+)",
                         "`upgrade: started the new process pid=N`")
        self.successor = Successor(int(m.group(1)))
        # from here on the counts come from the new process (its marker count too starts at
        # zero), plus what the old one had
        self.carried_errors = carried
        self.marks = 0
        _, m = wait_for(r"hayate serving .*?udp=\[(.*?)\] http=\[(.*?)\] metrics=(\S+)",
                        "a second `hayate serving` line (from the new process)", start=at)
        new_ports = {}
        for proto, text in (("udp", m.group(1)), ("http", m.group(2))):
            for fam, port in parse_addrs(text).items():
                new_ports[(proto, fam)] = port
        new_metrics = parse_addrs(m.group(3)).get("4") if m.group(3).startswith("Some(") \
            else None
        if new_ports != old_ports or new_metrics != old_metrics:
            raise TrackerError("the new process serves on other ports: %s metrics %s, before %s "
                               "metrics %s" % (new_ports, new_metrics, old_ports, old_metrics))
        wait_for(r"handed over to the new process", "`handed over to the new process`")
        try:
            code = self.proc.p.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            raise TrackerError("the old process (pid %d) still runs after handing over"
                               % old_pid)
        if code != 0:
            raise TrackerError("the old process (pid %d) exited with code %d after handing over"
                               % (old_pid, code))
        if os.path.exists("/proc/%d" % old_pid):
            raise TrackerError("pid %d (the old process) is still in /proc after it was reaped"
                               % old_pid)
        gone = self.successor.exited()
        if gone:
            raise TrackerError("the new process (pid %d) %s" % (self.successor.pid, gone))
        try:
            exe = os.readlink("/proc/%d/exe" % self.successor.pid)
        except OSError as e:
            raise TrackerError("the new process (pid %d): %s" % (self.successor.pid, e))
        if os.path.realpath(exe) != os.path.realpath(self.binary):
            raise TrackerError("pid %d runs %s, not %s" % (self.successor.pid, exe, self.binary))
        for fam in sorted({f for (_, f) in self.ports}):
            wait_udp_ready(host_of(fam), self.ports[("udp", fam)], deadline)
            holders = udp_socket_holders(self.ports[("udp", fam)])
            if self.successor.pid not in holders or old_pid in holders:
                raise TrackerError("UDP port %d: held by pids %s, expected the new process %d "
                                   "(and not the old %d)" % (self.ports[("udp", fam)],
                                                              sorted(holders),
                                                              self.successor.pid, old_pid))
        with open(self.log_path, "rb") as f:
            f.seek(off)
            snapshot = re.findall(r"[^\n]*(?:snapshot written|restored from the snapshot)"
                                  r"[^\n]*", f.read().decode("ascii", "replace"))
        return old_pid, self.successor.pid, snapshot

    def metrics_text(self):
        with _no_proxy_opener.open("http://127.0.0.1:%d/metrics" % self.metrics_port,
                                   timeout=3) as r:
            return r.read().decode("utf-8", "replace")

    def error_counts(self, timeout=10.0):
        """hayate_errors_total by (protocol, reason), from a snapshot taken after everything
        sent so far; None for trackers without the endpoint.

        The endpoint serves the snapshot of its last interval, so a plain read may be stale.
        Instead, each reading first sends one marker datagram, too short to be BEP 15,
        which hayate counts as {protocol="udp",reason="not_tracker"}; since only this
        harness sends such datagrams, a page where that counter has reached the number
        of markers sent is a snapshot taken after the latest marker, and so after every
        request that was answered before it."""
        if not self.metrics_port:
            return None
        counts = self._own_error_counts(timeout)
        for key, n in self.carried_errors.items():
            counts[key] = counts.get(key, 0) + n
        return counts

    def _own_error_counts(self, timeout):
        """error_counts of the process serving now (after an upgrade, counted from zero)."""
        self.marks += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(b"e2e-mark", ("127.0.0.1", self.port("udp", "4")))
        finally:
            s.close()
        end = time.monotonic() + timeout
        last = None
        while True:
            try:
                counts = parse_errors(self.metrics_text())
                if counts.get(("udp", "not_tracker"), 0) >= self.marks:
                    return counts
                last = "not_tracker=%d, markers sent %d" % (
                    counts.get(("udp", "not_tracker"), 0), self.marks)
            except OSError as e:
                last = e
            if time.monotonic() >= end:
                raise TrackerError("metrics never showed the marker datagram: %s" % last)
            time.sleep(0.05)

    def report_metrics(self):
        """Save hayate's /metrics and print its non-zero request and error counters."""
        if not self.metrics_port or self.proc is None or self.exited():
            return
        try:
            self.error_counts()  # a snapshot after the last case
            text = self.metrics_text()
        except (OSError, TrackerError) as e:
            log("metrics: %s" % e)
            return
        path = os.path.join(self.workdir, "metrics%s.txt" % self.suffix)
        with open(path, "w") as f:
            f.write(text)
        errs = [l for l in text.splitlines()
                if l.startswith("hayate_errors_total") and not l.endswith(" 0")]
        reqs = [l for l in text.splitlines()
                if l.startswith("hayate_requests_total") and not l.endswith(" 0")]
        log("metrics (%s): %s" % (path, "; ".join(l.replace("hayate_requests_total", "")
                                                   for l in reqs) or "no requests"))
        log("metrics errors (%d marker datagrams are the harness's own): %s"
            % (self.marks, "; ".join(errs) if errs else "none"))


def parse_errors(text):
    """hayate_errors_total lines of a metrics page -> {(protocol, reason): value}."""
    out = {}
    for m in re.finditer(r'^hayate_errors_total\{([^}]*)\} (\d+)', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        key = (labels.get("protocol", "?"), labels.get("reason", "?"))
        out[key] = out.get(key, 0) + int(m.group(2))
    return out


# --------------------------------------------------------------------------- hook cases

def toml_str(text):
    return json.dumps(text)  # a JSON string is a valid TOML basic string for these values


def jwt_section(ctx, issuer, audience):
    return ('[jwt]\nmode = "required"\njwks_path = %s\nissuer = %s\naudience = %s\n'
            % (toml_str(ctx.signer.jwks_path), toml_str(issuer), toml_str(audience)))


# What each hook case's tracker adds to the config (hayate only).
TRACKER_SETUPS = {
    "jwt-short": lambda ctx: jwt_section(ctx, JWT_SHORT_ISSUER, JWT_SHORT_AUDIENCE),
    "jwt": lambda ctx: jwt_section(ctx, JWT_ISSUER, JWT_AUDIENCE),
    "clientlist": lambda ctx: '[client_list]\nmode = "deny"\nprefixes = [%s]\n'
                              % toml_str(DENIED_PREFIX),
    # the state directory in the case's own work directory (left for a look with --keep)
    "restart": lambda ctx: '[protocol]\nannounce_interval_secs = %d\nmin_interval_secs = %d\n'
                           '\n[state]\ndirectory = %s\n'
                           % (RESTART_INTERVAL, RESTART_INTERVAL // 2,
                              toml_str(os.path.join(ctx.workdir, RESTART_CASE, "tracker-state"))),
}


def announce_url(case, payload, url, proto):
    """The announce URL in the case's torrent for the tracker's `url` (a `proto` one): that
    URL, with the case's path and `?jwt=` token if it has one."""
    if "token" not in case.opts:
        return url
    if proto == "udp" and "udp_path" in case.opts:
        url = url[:-len("/announce")] + case.opts["udp_path"]
    return url + "?jwt=" + payload["token"]


def url_data(url):
    """What a client sends as BEP 41 URL data for a udp:// URL: its path and query."""
    parts = urllib.parse.urlsplit(url)
    return (parts.path + ("?" + parts.query if parts.query else "")).encode()


def probe_url_data(ctx, case, payload):
    """BEP 41 URL data of the harness's probe announce: a token of its own algorithm when the
    case has tokens (longer than one option, so the tracker must join the options)."""
    if "token" not in case.opts:
        return b""
    _, issuer, audience = case.opts["token"]
    token = ctx.signer.sign(case.opts["probe_token"], payload["info_hash"], issuer, audience)
    return b"/announce?jwt=" + token.encode()


def read_errors(ctx):
    """hayate_errors_total now (see Tracker.error_counts); the marker datagram it sends is
    added to what the running case may count."""
    counts = ctx.tracker.error_counts()
    if counts is None:
        raise CaseFailed("hook cases need hayate's metrics endpoint")
    key = ("udp", "not_tracker")
    ctx.allowed[key] = ctx.allowed.get(key, 0) + 1
    return counts


def rises(before, after):
    """Counters that rose between two readings, without the later reading's marker."""
    out = {}
    for key in set(before) | set(after):
        n = after.get(key, 0) - before.get(key, 0) - (key == ("udp", "not_tracker"))
        if n:
            out[key] = n
    return out


def expect_refusal(ctx, what, send, proto, reason, message):
    """Sends one request the tracker must refuse: `send()` must raise TrackerRefusal with a
    message matching `message` (regex, any case), and hayate_errors_total must rise by
    exactly one, for `proto` under a reason matching `reason` (regex). That one is then
    allowed in the case's error check."""
    before = read_errors(ctx)
    try:
        got = send()
    except TrackerRefusal as e:
        msg = e.message
    except TrackerError as e:
        raise CaseFailed("%s: no answer: %s" % (what, e))
    else:
        raise CaseFailed("%s: accepted (%r); it must be refused" % (what, got))
    after = read_errors(ctx)
    grew = rises(before, after)
    log("  %s: refused with %r, counted as %s" % (what, msg, grew))
    if not re.search(message, msg, re.I):
        raise CaseFailed("%s: refused with %r, which does not say /%s/" % (what, msg, message))
    if len(grew) != 1 or list(grew.values()) != [1]:
        raise CaseFailed("%s: hayate_errors_total must rise by exactly one, rose by %s"
                         % (what, grew or "nothing"))
    key = next(iter(grew))
    if key[0] != proto or not re.search(reason, key[1]):
        raise CaseFailed('%s: counted as {protocol="%s",reason="%s"}, expected protocol %s and '
                         "a reason matching /%s/" % ((what,) + key + (proto, reason)))
    ctx.allowed[key] = ctx.allowed.get(key, 0) + 1


# hayate counts every token refusal under one reason; the message tells them apart.
JWT_REASON = r"^jwt_refused$"
# A refusal for a missing token must say so (not merely mention the token).
NO_TOKEN_MESSAGE = r"(no|without|missing|required).*(jwt|token)|(jwt|token).*(required|missing)"


def send_refusals(ctx, case, payload):
    """The case's `refusals`, in order (see HOOK_CASES)."""
    ih = payload["info_hash"]
    host = host_of(case.fam)
    udp_port = ctx.tracker.port("udp", case.fam)
    port = ctx.ports.take()
    pid = b"-E2E000-" + os.urandom(12)
    other = os.urandom(20)

    def other_hash_token():
        alg, issuer, audience = case.opts["token"]
        return ctx.signer.sign(alg, other, issuer, audience)

    for name in case.opts.get("refusals", []):
        if name == "udp-no-token":
            expect_refusal(ctx, "UDP announce without a token (98 bytes, no URL data)",
                           lambda: udp_announce(host, udp_port, ih, pid, 2, 1, port),
                           "udp", JWT_REASON, NO_TOKEN_MESSAGE)
        elif name == "udp-other-hash":
            data = b"/announce?jwt=" + other_hash_token().encode()
            expect_refusal(ctx, "UDP announce with a valid token for another info hash",
                           lambda: udp_announce(host, udp_port, ih, pid, 2, 1, port,
                                                url_data=data),
                           "udp", JWT_REASON, r"hash")
        elif name == "http-no-token":
            url = ctx.tracker.url("http", case.fam)
            expect_refusal(ctx, "HTTP announce without jwt=",
                           lambda: http_announce(url, ih, pid, port, 1, "started"),
                           "http", JWT_REASON, NO_TOKEN_MESSAGE)
        elif name == "http-other-hash":
            url = ctx.tracker.url("http", case.fam) + "?jwt=" + other_hash_token()
            expect_refusal(ctx, "HTTP announce with a valid token for another info hash",
                           lambda: http_announce(url, ih, pid, port, 1, "started"),
                           "http", JWT_REASON, r"hash")
        elif name == "udp-denied-client":
            denied = DENIED_PREFIX.encode() + os.urandom(20 - len(DENIED_PREFIX))
            expect_refusal(ctx, "UDP announce with peer_id %r..." % DENIED_PREFIX,
                           lambda: udp_announce(host, udp_port, ih, denied, 2, 1, port),
                           "udp", r"^client_not_allowed$", r"client not allowed")
        else:
            raise ValueError(name)


def refuse_denied_client(ctx, case, case_dir, payload, procs, sep, scrape):
    """Starts the case's `denied` client as a leecher while the seeder is in the swarm and
    checks that the tracker refused it: hayate_errors_total{reason="client_not_allowed"}
    rises for its protocol, its log shows the tracker's "client not allowed", the swarm
    stays the seeder alone, and it never dials the seeder nor gets the file. It is stopped
    again before the allowed leecher starts; its refusals are allowed in the error check."""
    client, proto = case.opts["denied"]
    key = (proto, "client_not_allowed")
    before = read_errors(ctx)
    p, ep = start_client(ctx, case_dir, client, "leech", proto, case.fam, payload, procs,
                         tag="denied")
    logs = [p.log_path] + p.extra_logs
    until = time.monotonic() + 20
    said = counted = False
    while not (said and counted):
        if time.monotonic() >= until:
            raise CaseFailed("denied %s: within 20 s, refusal counted: %s, its log shows the "
                             "refusal: %s" % (client, counted, said))
        if p.poll() is not None:
            break  # it may give up on a refused torrent; what it logged is still checked
        time.sleep(0.3)
        said = any("client not allowed" in read_text(path) for path in logs)
        try:
            counted = parse_errors(ctx.tracker.metrics_text()).get(key, 0) > before.get(key, 0)
        except OSError:
            counted = False
    time.sleep(2)  # time it would need to dial a peer had it been given one
    counts = scrape()
    file_done = os.path.exists(ep.file) and sha256_file(ep.file) == payload["sha256"]
    dialled = ctx.clients[client].dialled(ep, sep)
    p.stop()
    after = read_errors(ctx)
    grew = rises(before, after)
    log("  denied %s: tracker counted %s; swarm seeders=%d downloaded=%d leechers=%d"
        % ((client, grew) + counts))
    if not any("client not allowed" in read_text(path) for path in logs):
        raise CaseFailed("denied %s: its logs (%s) never show the tracker's \"client not "
                         "allowed\"" % (client, ", ".join(logs)))
    if grew.get(key, 0) < 1 or set(grew) != {key}:
        raise CaseFailed('denied %s: expected only hayate_errors_total{protocol="%s",'
                         'reason="client_not_allowed"} to rise, got %s' % ((client,) + key[:1]
                                                                          + (grew,)))
    if counts != (1, 0, 0):
        raise CaseFailed("denied %s: the swarm must be the seeder alone while it runs "
                         "(seeders=1 downloaded=0 leechers=0), got %s" % (client, counts))
    if dialled:
        raise CaseFailed("denied %s dialled the seeder %s:%d: it got peers" % (client, sep.ip,
                                                                               sep.port))
    if file_done:
        raise CaseFailed("denied %s got the whole file" % client)
    ctx.allowed[key] = ctx.allowed.get(key, 0) + grew[key]


# --------------------------------------------------------------------------- restart cases

# Announces the harness's probe makes (started, then stopped) in run_case.
PROBE_ANNOUNCES = 2


def lt_tracker_log(path):
    """What a libtorrent runner's log (lt_worker prints every alert) says about its tracker
    traffic: (announces sent, replies received, the alert lines). libtorrent raises a
    tracker_announce alert for each of its listen sockets, and for a socket that cannot reach
    the tracker (the IPv6 one, for an IPv4 tracker) at once a tracker_error "skipping tracker
    announce (unreachable)": those announces never leave, so they are not counted."""
    lines = [l for l in read_text(path).splitlines()
             if re.match(r"\[[ 0-9.]+\] tracker_", l)]
    sent = sum(1 for l in lines if "] tracker_announce:" in l) \
        - sum(1 for l in lines if "] tracker_error:" in l and "skipping tracker announce" in l)
    replies = sum(1 for l in lines if "] tracker_reply:" in l)
    return sent, replies, lines


def udp_announces_counted(text, protocol="udp"):
    """hayate_requests_total{protocol="udp",action="announce"} of a metrics page, both IP
    versions together (protocol=None: UDP and HTTP together)."""
    total = 0
    for m in re.finditer(r'^hayate_requests_total\{([^}]*)\} (\d+)', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if protocol in (None, labels.get("protocol")) and labels.get("action") == "announce":
            total += int(m.group(2))
    return total


def restart_tracker(ctx, seeder, deadline):
    """The restart step of a restart case: once every announce the (libtorrent) seeder has
    sent is answered, upgrade the tracker in place (Tracker.restart: SIGUSR2, the old process
    hands over and exits, the new one serves on the same ports). Returns how many announces
    the seeder had sent; check_no_reannounce compares that with the count at the end."""
    until = min(deadline, time.monotonic() + 10)
    while True:
        sent, replies, lines = lt_tracker_log(seeder.log_path)
        if sent >= 1 and replies == sent:
            break
        if time.monotonic() >= until:
            raise CaseFailed("before the restart the seeder's log (%s) shows %d announce(s) "
                             "sent and %d answered; every one must be answered first:\n%s"
                             % (seeder.log_path, sent, replies, "\n".join(lines[-10:])))
        time.sleep(0.1)
    log("  seeder has announced %d time(s), every one answered; restarting the tracker "
        "(SIGUSR2)" % sent)
    key = ("udp", "not_tracker")
    ctx.allowed[key] = ctx.allowed.get(key, 0) + 1  # restart reads the counters first
    try:
        old_pid, new_pid, snapshots = ctx.tracker.restart(min(deadline,
                                                               time.monotonic() + 30))
    except TrackerError as e:
        raise CaseFailed("restart: %s" % e)
    log("  tracker restarted: pid %d handed over and exited with 0; pid %d serves on the same "
        "ports and holds the UDP socket" % (old_pid, new_pid))
    for line in snapshots:
        log("    %s" % line.strip())
    return sent


def lt_peer_from_tracker(leecher, seeder, sep):
    """Why the libtorrent runners' logs do not show the leecher getting the seeder from the
    tracker (None if they do): a tracker reply with at least one peer must come before the
    leecher's first outgoing connection to the seeder's announced address, the leecher must
    have had no incoming connection and the seeder must have dialled nobody (with DHT, LSD and
    PEX off, the tracker is then the only way the two could have met). An incoming connection
    shows the dialler's source port, not its listen port, so no address is matched there."""
    text = read_text(leecher.log_path)
    addr = ("[%s]" % sep.ip if ":" in sep.ip else sep.ip) + ":%d" % sep.port
    reply = re.search(r"\] tracker_reply: [^\n]* received peers: [1-9]", text)
    dial = re.search(r"\] peer_connect: [^\n]*peer %s outgoing connection" % re.escape(addr), text)
    if not dial:
        return "the leecher's log (%s) shows no outgoing connection to the seeder %s" % (
            leecher.log_path, addr)
    if not reply or reply.start() > dial.start():
        return ("the leecher's log (%s) shows its connection to the seeder %s before any "
                "tracker reply with peers" % (leecher.log_path, addr))
    incoming = re.search(r"[^\n]*\] incoming_connection: [^\n]*", text)
    if incoming:
        return "the leecher was dialled: %s" % incoming.group(0)
    outgoing = re.search(r"[^\n]*\] peer_connect: [^\n]* outgoing connection[^\n]*",
                         read_text(seeder.log_path))
    if outgoing:
        return "the seeder dialled a peer: %s" % outgoing.group(0)
    return None


def check_no_reannounce(ctx, seeder, leecher, lep, sep, seeder_sent, probe_announces):
    """The seeder was handed out by the new process without announcing again: its own log
    shows no announce since the restart, and the new process (whose counters start at the
    restart) counted exactly the announces of the probe and of the leecher (its log), none
    more. The leecher must have got the seeder from the tracker (lt_peer_from_tracker)."""
    why = lt_peer_from_tracker(leecher, seeder, sep)
    if why:
        raise CaseFailed("peer source: %s" % why)
    sent, _, lines = lt_tracker_log(seeder.log_path)
    if sent != seeder_sent:
        raise CaseFailed("the seeder announced again after the restart: %d announce(s) before "
                         "it, %d by the end; its tracker alerts:\n%s"
                         % (seeder_sent, sent, "\n".join(lines)))
    read_errors(ctx)  # a page taken after every announce answered so far
    counted = udp_announces_counted(ctx.tracker.metrics_text())
    leecher_sent = lt_tracker_log(leecher.log_path)[0]
    if counted != probe_announces + leecher_sent:
        raise CaseFailed("the new process counted %d UDP announces (hayate_requests_total), but "
                         "the probe made %d and the leecher's log shows %d: %d from someone "
                         "else, which can only be the seeder announcing again"
                         % (counted, probe_announces, leecher_sent,
                            counted - probe_announces - leecher_sent))
    log("  libtorrent logs: the leecher dialled the seeder %s:%d after a tracker reply with "
        "peers; nobody dialled the leecher, the seeder dialled nobody" % (sep.ip, sep.port))
    log("  no re-announce: the seeder's log shows %d announce(s), all before the restart; the "
        "new process counted %d UDP announces = %d of the probe + %d of the leecher"
        % (sent, counted, probe_announces, leecher_sent))


# --------------------------------------------------------------------------- cluster cases

# What every redis-server since 6 logs once it serves ("Ready to accept connections" plus
# " tcp"/" unix" in 7): the readiness test of tests/support/redis_server.rs.
REDIS_READY = "eady to accept connections"


def redis_missing(cases):
    """Why the cluster cases among `cases` cannot run here (None if they can): no
    redis-server on PATH."""
    if any(c.opts.get("cluster") for c in cases) and not shutil.which("redis-server"):
        return "redis-server is not on PATH (Debian package redis-server, in .ci/packages.txt)"
    return None


class RedisServer:
    """The standalone redis-server of one cluster case: a unix socket in `directory` and no
    TCP port (nothing to race for), nothing saved, its log in `directory`. It runs in a
    process group of its own, which `stop` kills (SIGTERM, then SIGKILL), on failure too."""

    SUN_PATH_MAX = 107  # bytes of a unix socket path, without the NUL

    def __init__(self, directory):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.log_path = os.path.join(directory, "redis.log")
        self.socket = os.path.join(directory, "redis.sock")
        self.short_dir = None  # the socket's own directory if `directory` is too deep for one
        if len(self.socket.encode()) > self.SUN_PATH_MAX:
            self.short_dir = tempfile.mkdtemp(prefix="hayate-e2e-redis-")
            self.socket = os.path.join(self.short_dir, "redis.sock")
        self.url = "redis+unix://" + self.socket
        self.proc = None

    def start(self, deadline):
        """Starts it and waits until its log says it serves; raises TrackerError."""
        cmd = ["redis-server", "--port", "0", "--unixsocket", self.socket,
               "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
               "--dir", self.dir, "--logfile", self.log_path]
        self.proc = Proc("redis", cmd, os.path.join(self.dir, "redis-stdout.log"),
                         cwd=self.dir, env=child_env(self.dir))
        while REDIS_READY not in read_text(self.log_path):
            if self.proc.poll() is not None:
                raise TrackerError("redis-server exited with code %s before it served (%s)"
                                   % (self.proc.poll(), self.log_path))
            if time.monotonic() >= deadline:
                raise TrackerError("redis-server never logged %r (%s)"
                                   % (REDIS_READY, self.log_path))
            time.sleep(0.05)

    def exited(self):
        if self.proc is None or self.proc.poll() is None:
            return None
        return "exit code %s" % self.proc.poll()

    def stop(self):
        if self.proc is not None:
            self.proc.stop()
        if self.short_dir:
            shutil.rmtree(self.short_dir, ignore_errors=True)


def cluster_config(redis_url, node_id):
    """What a cluster node adds to its config: [cluster] on the case's Redis, and intervals
    short enough for the case (see CLUSTER_INTERVAL)."""
    return ('[protocol]\nannounce_interval_secs = %d\nmin_interval_secs = %d\n'
            '\n[cleaning]\npeer_lifetime_secs = %d\n'
            '\n[cluster]\nredis = %s\nnode_id = %s\nsync_interval_ms = %d\n'
            % (CLUSTER_INTERVAL, CLUSTER_MIN_INTERVAL, CLUSTER_PEER_LIFETIME,
               toml_str(redis_url), toml_str(node_id), CLUSTER_SYNC_MS))


def metric_value(text, name):
    """The value of the unlabelled metric `name` on a metrics page (None if it has none)."""
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def cluster_gauges(tracker):
    """A node's hayate_cluster_* values that the cluster cases check or print."""
    text = tracker.metrics_text()
    return {k: metric_value(text, "hayate_cluster_" + k)
            for k in ("connected", "sync_errors_total", "changes_dropped_total",
                      "republishes_total", "remote_torrents", "remote_peers")}


def wait_cluster_connected(ctx, deadline):
    """Both nodes' sync threads reach Redis: hayate_cluster_connected = 1 on each (at most
    10 s), with no sync error counted."""
    until = min(deadline, time.monotonic() + 10)
    for t in (ctx.seed_tracker, ctx.tracker):
        while True:
            try:
                g = cluster_gauges(t)
            except OSError as e:
                g = {"connected": "unreadable (%s)" % e}
            if g["connected"] == 1:
                break
            if time.monotonic() >= until:
                raise CaseFailed("%s: hayate_cluster_connected is %s, not 1, 10 s after it "
                                 "started: its sync thread does not reach Redis (the case's is "
                                 "%s; see its config hayate%s.toml and its log %s)"
                                 % (t.label, g["connected"], ctx.redis.url, t.suffix,
                                    t.log_path))
            time.sleep(0.1)
        if g["sync_errors_total"]:
            raise CaseFailed("%s: hayate_cluster_sync_errors_total = %d before the case began"
                             % (t.label, g["sync_errors_total"]))
    log("  both nodes reach Redis (hayate_cluster_connected = 1, no sync error)")


def check_only_probe_on(ctx, probe_announces):
    """The leecher's node has had no announce but the probe's (hayate_requests_total, UDP and
    HTTP together): the seeder it handed out never announced to it."""
    read_errors(ctx)  # a page taken after every announce answered so far
    counted = udp_announces_counted(ctx.tracker.metrics_text(), protocol=None)
    if counted != probe_announces:
        raise CaseFailed("%s counted %d announces before the leecher started, but the probe "
                         "made %d: %d from someone else, which can only be the seeder"
                         % (ctx.tracker.label, counted, probe_announces,
                            counted - probe_announces))
    log("  %s had no announce but the probe's %d: the seeder never announced to it"
        % (ctx.tracker.label, probe_announces))


def check_cluster(ctx, seeder, leecher):
    """After a cluster case: each client talked only to its own node, and neither node's sync
    failed or dropped a change.
    - The leecher's logs never name node A's addresses, the seeder's never node B's.
    - Node A counted exactly the announces the seeder's log shows (libtorrent's tracker
      alerts), none from the leecher or the probe.
    - On both nodes hayate_cluster_connected = 1, and hayate_cluster_sync_errors_total and
      hayate_cluster_changes_dropped_total are 0."""
    a, b = ctx.seed_tracker, ctx.tracker
    for client, other in ((leecher, a), (seeder, b)):
        addrs = [re.escape("%s:%d" % (url_host(fam), port)) for (_, fam), port in
                 sorted(other.ports.items())]
        for path in [client.log_path] + client.extra_logs:
            m = re.search(r"[^\n]*(?:%s)(?!\d)[^\n]*" % "|".join(addrs), read_text(path))
            if m:
                raise CaseFailed("the %s's log %s names %s, which it must not know: %s"
                                 % (client.name, path, other.label, m.group(0).strip()))
    sent, _, _ = lt_tracker_log(seeder.log_path)
    a.error_counts()  # a page taken after every announce answered so far (its marker is
    # allowed: see check_node_errors)
    counted = udp_announces_counted(a.metrics_text(), protocol=None)
    # read again: an announce the seeder made meanwhile counts on both sides
    sent_after, _, lines = lt_tracker_log(seeder.log_path)
    if not sent <= counted <= sent_after:
        raise CaseFailed("%s counted %d announces, but the seeder's log shows %d; its tracker "
                         "alerts:\n%s" % (a.label, counted, sent_after, "\n".join(lines)))
    gauges = {}
    for t in (a, b):
        g = gauges[t.label] = cluster_gauges(t)
        if g["connected"] != 1 or g["sync_errors_total"] or g["changes_dropped_total"]:
            raise CaseFailed("%s: hayate_cluster_connected = %s, sync_errors_total = %s, "
                             "changes_dropped_total = %s; expected 1, 0 and 0"
                             % (t.label, g["connected"], g["sync_errors_total"],
                                g["changes_dropped_total"]))
    log("  the leecher's logs never name %s, the seeder's never %s; %s counted %d announces, "
        "all the seeder's" % (a.label, b.label, a.label, counted))
    log("  cluster metrics: %s" % "; ".join(
        "%s %s" % (n, ", ".join("%s=%g" % kv for kv in g.items() if kv[1] is not None))
        for n, g in sorted(gauges.items())))


# --------------------------------------------------------------------------- running a case

class CaseFailed(Exception):
    pass


class CaseTimeout(BaseException):
    pass


def _on_alarm(signum, frame):
    raise CaseTimeout()


def _on_term(signum, frame):
    raise KeyboardInterrupt()


def short_url(url):
    """An announce URL for the log, its token cut short."""
    return re.sub(r"(jwt=[^&]{12})[^&]+", r"\1...", url)


def start_client(ctx, case_dir, client_name, role, proto, fam, payload, procs, tag=None):
    workdir = os.path.join(case_dir, (tag or role) + "-" + client_name)
    data_dir = os.path.join(workdir, "data")
    os.makedirs(data_dir, exist_ok=True)
    if role == "seed":
        shutil.copyfile(payload["path"], os.path.join(data_dir, payload["name"]))
    # a seeder's tracker (node A in a cluster case, else the one tracker), a leecher's
    url = (ctx.seed_tracker if role == "seed" else ctx.tracker).url(proto, fam)
    if fam == "6":
        ip = "::1"
    elif ctx.same_ip and client_name != "ctorrent":
        ip = "127.0.0.1"
    else:
        # each peer on an address of its own, as on a real network (ctorrent needs it)
        ip = "127.0.0.2" if role == "seed" else "127.0.0.3"
    ep = Endpoint(workdir, payload["torrents"][url], data_dir, payload["name"],
                  ctx.ports.take(), ctx.ports.take(), fam, proto, url, role, ip)
    client = ctx.clients[client_name]
    cmd, extra_logs = client.command(ep)
    p = Proc("%s %s" % (role, client_name), cmd, os.path.join(workdir, "stdout.log"),
             cwd=workdir, env=child_env(workdir), extra_logs=extra_logs)
    procs.append(p)
    log("  started %s %s (%s, peer address %s port %d, pid %d)"
        % (tag or role, client_name, short_url(payload["announce"][url]), ep.ip, ep.port,
           p.p.pid))
    return p, ep


def same_peer(a, b):
    """(ip, port) pairs equal, comparing addresses in binary (IPv6 text has many forms)."""
    fa = socket.AF_INET6 if ":" in a[0] else socket.AF_INET
    fb = socket.AF_INET6 if ":" in b[0] else socket.AF_INET
    return (fa == fb and socket.inet_pton(fa, a[0]) == socket.inet_pton(fb, b[0])
            and a[1] == b[1])


def expected_counts(ctx, case):
    """The exact BEP 15 scrape (seeders, completed, leechers) once the leecher is done: the
    seeder and the finished leecher both seed, nobody leeches, one download. Two client
    quirks change it: a leecher that never sends `completed` (rtorrent) makes no download
    (it only re-announces with left=0), and a seeder whose only announce says it still
    needs data (ctorrent) stays a leecher."""
    sends_completed = getattr(ctx.clients[case.leech[0]], "sends_completed", True)
    seeds_as_leecher = getattr(ctx.clients[case.seed[0]], "seeds_as_leecher", False)
    return (1 if seeds_as_leecher else 2), (1 if sends_completed else 0), \
        (1 if seeds_as_leecher else 0)


def expected_errors(ctx, case):
    """hayate_errors_total increases a case may cause, by (protocol, reason): the one marker
    datagram of the reading after it (see Tracker.error_counts), plus each client's known
    quirks (`expected_errors` on its class, with the reason there)."""
    want = {("udp", "not_tracker"): 1}
    for key, n in getattr(ctx, "allowed", {}).items():  # what the case itself provoked
        want[key] = want.get(key, 0) + n
    for client in {case.seed[0], case.leech[0]}:
        for key, n in getattr(ctx.clients[client], "expected_errors", {}).items():
            want[key] = want.get(key, 0) + n
    return want


def check_errors(ctx, case, before, after, allowed=None, who=""):
    """Reasons the case failed on the tracker's error counters (empty when none); `allowed`
    defaults to expected_errors, `who` names the tracker in the reasons."""
    if before is None or after is None:
        return []
    if allowed is None:
        allowed = expected_errors(ctx, case)
    bad = []
    for key in sorted(set(before) | set(after)):
        grew = after.get(key, 0) - before.get(key, 0)
        if grew > allowed.get(key, 0):
            bad.append('%shayate_errors_total{protocol="%s",reason="%s"} rose by %d '
                       '(expected %d)' % ((who,) + key + (grew, allowed.get(key, 0))))
    return bad


def check_node_errors(ctx, case, tracker, before, after, marks_before):
    """check_errors for a cluster's seeder node (node A): what it may count is one marker
    datagram per reading taken since `before` (Tracker.marks counts them) and the seeder's
    known quirks; the leecher and the probe never reach it."""
    allowed = {("udp", "not_tracker"): tracker.marks - marks_before}
    for key, n in getattr(ctx.clients[case.seed[0]], "expected_errors", {}).items():
        allowed[key] = allowed.get(key, 0) + n
    return check_errors(ctx, case, before, after, allowed, tracker.label + ": ")


def run_case(ctx, case):
    deadline = time.monotonic() + ctx.timeout
    case_dir = os.path.join(ctx.workdir, case.name)
    os.makedirs(case_dir, exist_ok=True)
    payload = ctx.payloads[case.name]
    ih = payload["info_hash"]
    scrape_host = host_of(case.fam)
    scrape_port = ctx.tracker.port("udp", case.fam)
    # The tracker the seeder announces to: in a cluster case node A (ctx.tracker, which
    # serves the leecher and the probe, is node B), else the same one.
    cluster = case.opts.get("cluster")
    trackers = [ctx.tracker] + ([ctx.seed_tracker] if ctx.seed_tracker is not ctx.tracker
                                else [])
    procs = []
    # (a cluster case's nodes are its own: their whole logs, start-up included, are its)
    tracker_off = 0 if cluster else ctx.tracker.log_offset()
    t0 = time.monotonic()
    ctx.allowed = {}  # errors the case provokes on purpose (see expect_refusal)

    def left():
        return deadline - time.monotonic()

    def check_tracker():
        for t in trackers:
            gone = t.exited()
            if gone:
                raise CaseFailed("%s ended: %s" % (t.label or "tracker", gone))
        gone = ctx.redis.exited() if ctx.redis else None
        if gone:
            raise CaseFailed("redis-server ended: %s (%s)" % (gone, ctx.redis.log_path))

    def scrape():
        return tuple(udp_scrape(scrape_host, scrape_port, [ih])[0])

    try:
        if cluster:
            wait_cluster_connected(ctx, deadline)
        for (client, proto), t in ((case.seed, ctx.seed_tracker), (case.leech, ctx.tracker)):
            data = url_data(payload["announce"][t.url(proto, case.fam)])
            if client == "libtorrent" and proto == "udp" \
                    and len(data) > LIBTORRENT_URL_DATA_MAX:
                raise CaseFailed("libtorrent would cut the %d bytes of URL data %r... to %d: "
                                 "the token cannot reach the tracker"
                                 % (len(data), data[:40], LIBTORRENT_URL_DATA_MAX))
        send_refusals(ctx, case, payload)
        seeder, sep = start_client(ctx, case_dir, case.seed[0], "seed", case.seed[1], case.fam,
                                   payload, procs)
        # Wait until the tracker knows a seeder, so the leecher's first announce gets it.
        announced = None
        wait_until = time.monotonic() + min(45.0, max(left() - 20, 5))
        first_seen = None
        while time.monotonic() < wait_until:
            check_tracker()
            if seeder.poll() is not None:
                raise CaseFailed("seeder exited early with code %s" % seeder.poll())
            try:
                s, d, l = udp_scrape(scrape_host, ctx.seed_tracker.port("udp", case.fam),
                                     [ih])[0]
            except TrackerError as e:
                log("  scrape while waiting for seeder: %s" % e)
                s = d = l = 0
            if s >= 1:
                announced = "seeder"
                break
            if l >= 1:
                first_seen = first_seen or time.monotonic()
                if time.monotonic() - first_seen > 3:
                    announced = "peer (announced as incomplete)"
                    break
            time.sleep(0.3)
        if not announced:
            raise CaseFailed("seeder never showed up in a UDP scrape")
        log("  %s lists the %s after %.1fs" % (ctx.seed_tracker.label or "tracker", announced,
                                                time.monotonic() - t0))
        if case.opts.get("restart"):
            seeder_sent = restart_tracker(ctx, seeder, deadline)

        # What a new peer is told: it must be the seeder, at the address and port the seeder
        # announced, or the tracker did not supply it. The probe leaves again at once.
        pid = b"-E2E000-" + os.urandom(12)
        probe_port = ctx.ports.take()
        probe_announces = 0
        try:  # PROBE_ANNOUNCES announces: started, stopped
            data = probe_url_data(ctx, case, payload)
            iv, nl, ns, peers = udp_announce(scrape_host, scrape_port, ih, pid, 2, 1, probe_port,
                                             url_data=data)
            probe_announces += 1
            if cluster:
                # Node B reads node A's peers of a torrent only once asked about it: its
                # first reply holds its own peers alone; it must hand out the seeder within
                # a few syncs of that. The probe announces again (no event) until it does.
                log("  probe's first announce to %s: leechers=%d seeders=%d peers=%s"
                    % (ctx.tracker.label, nl, ns, " ".join("%s:%d" % p for p in peers) or "-"))
                asked = time.monotonic()
                while not any(same_peer(p, (sep.ip, sep.port)) for p in peers) \
                        and time.monotonic() - asked < CLUSTER_PROBE_WITHIN:
                    time.sleep(CLUSTER_SYNC_MS / 4000.0)
                    iv, nl, ns, peers = udp_announce(scrape_host, scrape_port, ih, pid, 0, 1,
                                                     probe_port, url_data=data)
                    probe_announces += 1
                log("  %s handed out a peer list %.1fs after it was first asked (%d announces)"
                    % (ctx.tracker.label, time.monotonic() - asked, probe_announces))
            udp_announce(scrape_host, scrape_port, ih, pid, 3, 1, probe_port, url_data=data)
            probe_announces += 1
        except TrackerError as e:
            raise CaseFailed("probe announce failed: %s" % e)
        log("  probe announce%s: interval=%d leechers=%d seeders=%d peers=%s (seeder is %s:%d)"
            % ((" (%d bytes of URL data)" % len(data) if data else "", iv, nl, ns,
                " ".join("%s:%d" % p for p in peers) or "-", sep.ip, sep.port)))
        if not any(same_peer(p, (sep.ip, sep.port)) for p in peers):
            raise CaseFailed("probe announce: the tracker's peer list %s lacks the seeder %s:%d"
                             % ([("%s:%d" % p) for p in peers], sep.ip, sep.port))
        if ns + nl != 2:
            raise CaseFailed("probe announce: swarm of seeders=%d leechers=%d, expected the "
                             "seeder and the probe (2 peers)" % (ns, nl))
        if "interval" in case.opts and iv != case.opts["interval"]:
            raise CaseFailed("probe announce: interval %d, the tracker was configured with %d"
                             % (iv, case.opts["interval"]))

        if cluster:
            check_only_probe_on(ctx, probe_announces)
        if "denied" in case.opts:
            refuse_denied_client(ctx, case, case_dir, payload, procs, sep, scrape)
        leecher, lep = start_client(ctx, case_dir, case.leech[0], "leech", case.leech[1],
                                    case.fam, payload, procs)
        t1 = time.monotonic()
        done = False
        while left() > 0:
            check_tracker()
            if os.path.exists(lep.file) and os.path.getsize(lep.file) == payload["size"]:
                if sha256_file(lep.file) == payload["sha256"]:
                    done = True
                    break
            if leecher.poll() is not None and not done:
                # one last look: a client may exit right after finishing
                if os.path.exists(lep.file) and sha256_file(lep.file) == payload["sha256"]:
                    done = True
                    break
                raise CaseFailed("leecher exited with code %s before completing" % leecher.poll())
            if seeder.poll() is not None:
                raise CaseFailed("seeder exited with code %s" % seeder.poll())
            time.sleep(0.3)
        if not done:
            have = os.path.getsize(lep.file) if os.path.exists(lep.file) else None
            raise CaseFailed("leecher did not complete in time (file size %s of %d)"
                             % (have, payload["size"]))
        log("  leecher complete, SHA-256 matches (%.1fs)" % (time.monotonic() - t1))
        check = getattr(ctx.clients[case.leech[0]], "check_peer_source", None)
        if check:
            why = check(lep, sep)
            if why:
                raise CaseFailed("%s leecher: %s" % (case.leech[0], why))
            log("  %s's log: its peer came from the tracker, its DHT exchanged nothing"
                % case.leech[0])

        # The scrape must show exactly the swarm the case made, once the leecher's
        # completion reached the tracker. In a cluster case, on either node: each counts the
        # other's peers and downloads with its own.
        want = expected_counts(ctx, case)
        for t in trackers:
            who = " " + t.label if t.label else ""
            port = t.port("udp", case.fam)
            counts = err = None
            until = time.monotonic() + min(20.0, max(left(), 1))
            while True:
                check_tracker()
                try:
                    counts = tuple(udp_scrape(scrape_host, port, [ih])[0])
                except TrackerError as e:
                    counts, err = None, e
                if counts == want or time.monotonic() >= until:
                    break
                time.sleep(0.5)
            if counts is None:
                raise CaseFailed("UDP scrape%s failed: %s" % (who, err))
            log("  UDP scrape%s [%s]:%d: seeders=%d downloaded=%d leechers=%d"
                % ((who, scrape_host, port) + counts))
            if counts != want:
                raise CaseFailed("UDP scrape%s: expected seeders=%d downloaded=%d leechers=%d, "
                                 "got seeders=%d downloaded=%d leechers=%d"
                                 % ((who,) + want + counts))

        if case.opts.get("restart"):
            check_no_reannounce(ctx, seeder, leecher, lep, sep, seeder_sent, PROBE_ANNOUNCES)

        for t in trackers if "http" in case.protos else []:
            base = "http://%s:%d" % (url_host(case.fam), t.port("http", case.fam))
            try:
                status, body = http_scrape(base, ih)
            except OSError as e:
                raise CaseFailed("HTTP scrape %s: %s" % (base, e))
            if status != 200:
                raise CaseFailed("HTTP scrape %s: status %d, body %r" % (base, status, body[:200]))
            try:
                d = bdecode(body)
            except ValueError as e:
                raise CaseFailed("HTTP scrape %s: body is not bencode (%s): %r"
                                 % (base, e, body[:200]))
            files = d.get(b"files") if isinstance(d, dict) else None
            f = files.get(ih) if isinstance(files, dict) else None
            if not isinstance(f, dict):
                raise CaseFailed("HTTP scrape %s: no files entry for the torrent: %r"
                                 % (base, body[:200]))
            got = tuple(f.get(k) for k in (b"complete", b"downloaded", b"incomplete"))
            log("  HTTP scrape %s: complete=%s downloaded=%s incomplete=%s" % ((base,) + got))
            if got != want:
                raise CaseFailed("HTTP scrape %s: expected complete=%d downloaded=%d "
                                 "incomplete=%d, got complete=%s downloaded=%s incomplete=%s"
                                 % ((base,) + want + got))

        if cluster:
            check_cluster(ctx, seeder, leecher)
        return True, time.monotonic() - t0, None
    except CaseFailed as e:
        return False, time.monotonic() - t0, str(e)
    except CaseTimeout:
        return False, time.monotonic() - t0, "hard time bound hit"
    except Exception:
        return False, time.monotonic() - t0, traceback.format_exc()
    finally:
        for p in procs:
            p.stop()
        case_dir_logs = [(p.name, [p.log_path] + p.extra_logs) for p in procs]
        if ctx.seed_tracker is not ctx.tracker:
            case_dir_logs.append((ctx.seed_tracker.label, [ctx.seed_tracker.log_path]))
        if ctx.redis:
            case_dir_logs.append(("redis-server", [ctx.redis.log_path]))
        ctx.last_logs = (tracker_off, case_dir_logs)


def print_failure_logs(ctx, tracker_off, client_logs):
    log("  ---- %s log (this case) %s" % (ctx.tracker.label or "tracker", ctx.tracker.log_path))
    log(tail(ctx.tracker.log_path, 80, tracker_off) or "  (empty)")
    for name, paths in client_logs:
        for p in paths:
            log("  ---- %s: %s" % (name, p))
            log(tail(p, 40))
    log("  ----")


# --------------------------------------------------------------------------- main

class Ctx:
    pass


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracker-bin", help="tracker binary (hayate; for opentracker default: opentracker)")
    ap.add_argument("--tracker-kind", choices=["hayate", "opentracker", "mini"], default="hayate",
                    help="mini: the small reference tracker built into this script")
    ap.add_argument("--cases", help="comma-separated substrings or globs selecting cases")
    ap.add_argument("--matrix", choices=["default", "capable", "all"], default="default",
                    help="cases --cases picks from: the default list; every pair the clients "
                         "can do on loopback; or every pair, even ones known not to work")
    ap.add_argument("--all-pairs", action="store_true", help="same as --matrix all")
    ap.add_argument("--list", action="store_true", help="list the selected cases and exit")
    ap.add_argument("--timeout-per-case", type=float, default=90.0)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--workdir", help="work directory (default: a new temporary one)")
    ap.add_argument("--lt-python", default=sys.executable,
                    help="python that has the libtorrent module (default: this one)")
    ap.add_argument("--log-level", default="info", help="RUST_LOG for hayate if unset")
    ap.add_argument("--jwt-keys", default=JWT_KEY_DIR,
                    help="directory with jwks.json and the private keys that sign the jwt-* "
                         "cases' tokens (default: tests/data/jwt)")
    ap.add_argument("--same-ip", action="store_true",
                    help="IPv4 clients all on 127.0.0.1 (default: seeder 127.0.0.2, leecher "
                         "127.0.0.3)")
    args = ap.parse_args(argv)

    cases = select_cases(args)
    if args.tracker_kind == "opentracker":
        v6 = [c for c in cases if c.fam == "6"]
        if v6:
            log("opentracker (Debian build) is IPv4 only: leaving out %d IPv6 case(s)" % len(v6))
            cases = [c for c in cases if c.fam != "6"]
    if args.tracker_kind != "hayate":
        hooks = [c for c in cases if c.setup]
        if hooks:
            log("the hook, restart and cluster cases need hayate ([jwt], [client_list], "
                "[state], SIGUSR2, [cluster]): leaving out %d case(s)" % len(hooks))
            cases = [c for c in cases if not c.setup]
    if not HAVE_V6:
        v6 = [c for c in cases if c.fam == "6"]
        if v6:
            log("no IPv6 loopback here: leaving out %d IPv6 case(s)" % len(v6))
            cases = [c for c in cases if c.fam != "6"]
    if args.list:
        for c in cases:
            print(c.name)
        return 0
    if not cases:
        log("no case selected")
        log("0 passed, 0 failed")
        return 1
    if args.tracker_kind == "hayate" and not args.tracker_bin:
        ap.error("--tracker-bin is required for --tracker-kind hayate")
    if args.tracker_bin and os.sep in args.tracker_bin:
        args.tracker_bin = os.path.abspath(args.tracker_bin)

    needed = {c.seed[0] for c in cases} | {c.leech[0] for c in cases}
    exe = {"transmission": "transmission-cli", "aria2": "aria2c", "rtorrent": "rtorrent",
           "ctorrent": "ctorrent"}
    for n in sorted(needed):
        if n in exe and not shutil.which(exe[n]):
            log("missing client %s; run tests/clients/install.sh" % exe[n])
            log("0 passed, %d failed" % len(cases))
            return 1
    if "libtorrent" in needed:
        r = subprocess.run([args.lt_python, "-c", "import libtorrent"], capture_output=True)
        if r.returncode != 0:
            log("python %s has no libtorrent module; run tests/clients/install.sh and use "
                "tests/clients/.venv/bin/python" % args.lt_python)
            log("0 passed, %d failed" % len(cases))
            return 1
    # The cluster cases need a redis-server: its absence fails the run under CI=true, as a
    # missing client does; elsewhere it leaves them out (as tests/cluster.rs skips).
    why = redis_missing(cases)
    if why and os.environ.get("CI") == "true":
        log("%s, and the cluster cases need it (CI=true)" % why)
        log("0 passed, %d failed" % len(cases))
        return 1
    if why:
        skipped = [c.name for c in cases if c.opts.get("cluster")]
        log("skipped: %s; leaving out %d cluster case(s): %s"
            % (why, len(skipped), ", ".join(skipped)))
        cases = [c for c in cases if not c.opts.get("cluster")]
        if not cases:
            log("0 passed, 0 failed")
            return 0
    signer = None
    if any("token" in c.opts for c in cases):
        try:
            signer = TokenSigner(args.jwt_keys)
        except ImportError as e:
            log("python %s cannot sign tokens (%s); run tests/clients/install.sh and use "
                "tests/clients/.venv/bin/python" % (sys.executable, e))
            log("0 passed, %d failed" % len(cases))
            return 1
        except (OSError, ValueError, KeyError) as e:
            log("cannot read the JWT test keys in %s: %s" % (args.jwt_keys, e))
            log("0 passed, %d failed" % len(cases))
            return 1

    ctx = Ctx()
    ctx.timeout = args.timeout_per_case
    ctx.same_ip = args.same_ip
    ctx.workdir = args.workdir or tempfile.mkdtemp(prefix="hayate-e2e-")
    os.makedirs(ctx.workdir, exist_ok=True)
    ctx.clients = {"libtorrent": Libtorrent(args.lt_python), "transmission": Transmission(),
                   "aria2": Aria2(), "rtorrent": Rtorrent(), "ctorrent": Ctorrent()}
    ctx.ports = PortBlock()
    ctx.signer = signer
    log("work directory %s" % ctx.workdir)

    # every case gets its own random payload, hence its own swarm
    ctx.payloads = {}
    for c in cases:
        d = os.path.join(ctx.workdir, c.name)
        os.makedirs(d, exist_ok=True)
        name = "payload-%s.bin" % c.name
        path = os.path.join(d, name)
        make_payload(path, PAYLOAD_SIZE)
        info, ih = make_info(path, name)
        ctx.payloads[c.name] = {"path": path, "name": name, "size": PAYLOAD_SIZE,
                                "sha256": sha256_file(path), "info_hash": ih, "info": info,
                                "dir": d, "torrents": {}, "announce": {}}

    # One tracker per setup: the plain one for the ordinary cases, one of its own for each hook
    # case's configuration (TRACKER_SETUPS), each started, used and stopped in turn.
    setups = []
    for c in cases:
        if c.setup not in setups:
            setups.append(c.setup)
    passed = failed = 0
    results = []
    t_start = time.monotonic()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, _on_term)
    for setup in setups:
        group = [c for c in cases if c.setup == setup]
        want_http = any("http" in c.protos for c in group)
        want_v6 = any(c.fam == "6" for c in group)
        hashes = [ctx.payloads[c.name]["info_hash"] for c in group]
        ctx.redis = None
        if group[0].opts.get("cluster"):
            # a Redis and two nodes of the case's own, their files in its work directory
            case_dir = os.path.join(ctx.workdir, group[0].name)
            ctx.redis = RedisServer(os.path.join(case_dir, "redis"))
            ctx.seed_tracker, ctx.tracker = [
                Tracker(args.tracker_kind, args.tracker_bin, case_dir, want_http, want_v6,
                        hashes, args.log_level, ctx.ports, setup=setup,
                        extra_config=cluster_config(ctx.redis.url, node), label="node-" + node)
                for node in CLUSTER_NODES]
        else:
            ctx.tracker = ctx.seed_tracker = Tracker(
                args.tracker_kind, args.tracker_bin, ctx.workdir, want_http, want_v6, hashes,
                args.log_level, ctx.ports, setup=setup,
                extra_config=TRACKER_SETUPS[setup](ctx) if setup else "")
        p, f, stop = run_setup(ctx, args, group, results)
        passed += p
        failed += f
        if stop:
            failed += len(cases) - len(results)
            break
    if not args.keep and not args.workdir and failed == 0:
        shutil.rmtree(ctx.workdir, ignore_errors=True)
    elif failed:
        log("logs kept in %s" % ctx.workdir)
    log("")
    log("total %.0fs against %s" % (time.monotonic() - t_start, args.tracker_kind))
    for name, ok in results:
        log("%s %s" % ("PASS" if ok else "FAIL", name))
    log("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


def run_setup(ctx, args, cases, results):
    """Starts ctx.tracker (for a cluster: ctx.redis, then node A, ctx.seed_tracker, then node
    B, ctx.tracker), runs `cases` against it, stops it. Returns (passed, failed, stop): stop
    when the run must end here (interrupted); the cases it did not run are then not yet
    counted."""
    passed = failed = 0
    setup = ctx.tracker.setup
    # every tracker of the setup: node A of a cluster first, then the one the cases probe
    trackers = ([ctx.seed_tracker] if ctx.seed_tracker is not ctx.tracker else []) \
        + [ctx.tracker]
    try:
        try:
            if ctx.redis:
                ctx.redis.start(time.monotonic() + 15)
            for t in trackers:
                t.start(time.monotonic() + 15)
            # per tracker: the error counts and markers sent at the last reading
            before = {t: (t.error_counts(), t.marks) for t in trackers}
        except TrackerError as e:
            log("tracker%s did not come up: %s" % (" for " + setup if setup else "", e))
            for path in [t.log_path for t in trackers] \
                    + ([ctx.redis.log_path] if ctx.redis else []):
                log("---- log %s" % path)
                log(tail(path, 80))
            for c in cases:
                results.append((c.name, False))
            return 0, len(cases), False
        if ctx.redis:
            log("redis-server (pid %d) serves %s" % (ctx.redis.proc.p.pid, ctx.redis.url))
        for t in trackers:
            log("%s (%s%s) answers on %s%s" % (
                t.label or "tracker", args.tracker_kind, ", " + setup if setup else "",
                ", ".join("%s%s port %d" % (p, f, n) for (p, f), n in sorted(t.ports.items())),
                ", metrics port %d" % t.metrics_port if t.metrics_port else ""))
        if before[ctx.tracker][0] is None and args.tracker_kind == "hayate":
            log("warning: no metrics endpoint: the tracker's error counters go unchecked")
        # the torrents name the trackers' actual ports, known only now
        for c in cases:
            p = ctx.payloads[c.name]
            if "token" in c.opts:
                alg, issuer, audience = c.opts["token"]
                p["token"] = ctx.signer.sign(alg, p["info_hash"], issuer, audience)
            for t in trackers:
                for (proto, fam) in t.ports:
                    url = t.url(proto, fam)
                    torrent = os.path.join(p["dir"], "%s%s%s.torrent"
                                           % (t.label + "-" if t.label else "", proto, fam))
                    p["announce"][url] = announce_url(c, p, url, proto)
                    write_torrent(torrent, p["info"], p["announce"][url])
                    p["torrents"][url] = torrent

        for i, c in enumerate(cases):
            log("=== %s" % c.name)
            signal.alarm(int(ctx.timeout) + 30)  # hard bound, above the soft one in run_case
            try:
                ok, secs, why = run_case(ctx, c)
            except CaseTimeout:
                ok, secs, why = False, ctx.timeout, "hard time bound hit"
            except KeyboardInterrupt:
                signal.alarm(0)
                log("interrupted during %s" % c.name)
                return passed, failed, True
            finally:
                signal.alarm(0)
            # Every error each tracker counted during the case (its clients are stopped by
            # now) must be one the case expects.
            for t in trackers:
                if t.exited():
                    continue
                errors_before, marks_before = before[t]
                try:
                    errors_after = t.error_counts()
                except TrackerError as e:
                    errors_after = None
                    ok, why = False, "%s%s%s" % (why + "; " if why else "",
                                                 t.label + ": " if t.label else "", e)
                if t is ctx.tracker:
                    bad = check_errors(ctx, c, errors_before, errors_after,
                                       who=t.label + ": " if t.label else "")
                else:
                    bad = check_node_errors(ctx, c, t, errors_before, errors_after,
                                            marks_before)
                if bad:
                    ok, why = False, "%s%s" % (why + "; " if why else "",
                                               "unexpected tracker errors: " + "; ".join(bad))
                if errors_after is not None:
                    before[t] = (errors_after, t.marks)
            if ok:
                passed += 1
                log("PASS %s (%.1fs)" % (c.name, secs))
            else:
                failed += 1
                log("FAIL %s (%.1fs): %s" % (c.name, secs, why))
                print_failure_logs(ctx, *ctx.last_logs)
            results.append((c.name, ok))
            dead = [t for t in trackers if t.exited()]
            if dead:
                for t in dead:
                    log("%s died (%s); failing the remaining cases"
                        % (t.label or "tracker", t.exited()))
                    log(tail(t.log_path, 80))
                for rest in cases[i + 1:]:
                    results.append((rest.name, False))
                    failed += 1
                break
        return passed, failed, False
    finally:
        for t in trackers:
            try:
                t.report_metrics()
            except Exception as e:  # informational only
                log("metrics: %r" % e)
        for t in reversed(trackers):
            t.stop()
        if ctx.redis:
            ctx.redis.stop()


# --------------------------------------------------------------------------- mini tracker

def mini_tracker(argv):
    """A small reference tracker (UDP BEP 15 + HTTP, IPv4 + IPv6) for --tracker-kind mini.

    It exists to check the harness and the clients without the real tracker; it is
    deliberately simple: compact peer lists, the announcing peer left out, one swarm
    per info hash shared by both protocols and both families."""
    import http.server
    import socketserver
    import threading

    ap = argparse.ArgumentParser(prog="e2e.py mini-tracker")
    ap.add_argument("--v6", action="store_true")
    a = ap.parse_args(argv)
    lock = threading.Lock()
    swarms = {}  # info_hash -> {"peers": {(ip, port): left}, "downloaded": n}
    interval = 60

    def say(msg):
        print("[mini %.3f] %s" % (time.time(), msg), flush=True)

    def announce(ih, ip, port, left, event, numwant):
        with lock:
            sw = swarms.setdefault(ih, {"peers": {}, "downloaded": 0})
            key = (ip, port)
            if event == "stopped":
                sw["peers"].pop(key, None)
            else:
                sw["peers"][key] = left
            if event == "completed":
                sw["downloaded"] += 1
            others = [k for k in sw["peers"] if k != key]
            seeders = sum(1 for v in sw["peers"].values() if v == 0)
            leechers = len(sw["peers"]) - seeders
        if numwant < 0 or numwant > 50:
            numwant = 50
        return seeders, leechers, others[:numwant]

    def scrape(ih):
        with lock:
            sw = swarms.get(ih)
            if not sw:
                return 0, 0, 0
            seeders = sum(1 for v in sw["peers"].values() if v == 0)
            return seeders, sw["downloaded"], len(sw["peers"]) - seeders

    def compact(peers, fam):
        out = b""
        for ip, port in peers:
            if (":" in ip) == (fam == socket.AF_INET6):
                out += socket.inet_pton(fam, ip) + struct.pack(">H", port)
        return out

    events = {0: "none", 1: "completed", 2: "started", 3: "stopped"}

    def udp_loop(sock, fam):
        while True:
            data, addr = sock.recvfrom(2048)
            ip = addr[0]
            if len(data) < 16:
                continue
            conn, action, tid = struct.unpack(">QII", data[:16])
            if action == 0 and conn == UDP_PROTOCOL_ID:
                sock.sendto(struct.pack(">IIQ", 0, tid, 0x1234567890), addr)
            elif action == 1 and len(data) >= 98:
                ih, pid, down, left, up, ev, _ip, key, numwant, port = struct.unpack(
                    ">20s20sQQQIIIiH", data[16:98])
                s_, l_, peers = announce(ih, ip, port, left, events.get(ev, "none"), numwant)
                say("udp announce %s %s:%d left=%d event=%s -> %d peers"
                    % (ih.hex(), ip, port, left, events.get(ev), len(peers)))
                sock.sendto(struct.pack(">IIIII", 1, tid, interval, l_, s_)
                            + compact(peers, fam), addr)
            elif action == 2:
                out = struct.pack(">II", 2, tid)
                for i in range(16, len(data) - 19, 20):
                    out += struct.pack(">III", *scrape(data[i:i + 20]))
                sock.sendto(out, addr)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, fmt, *args):
            say("http %s %s" % (self.client_address[0], fmt % args))

        def reply(self, body, code=200):
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            path, _, query = self.path.partition("?")
            q = {}
            for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True, encoding="latin-1"):
                q.setdefault(k, []).append(v.encode("latin-1"))
            ip = self.client_address[0]
            if ip.startswith("::ffff:"):
                ip = ip[7:]
            if path == "/announce":
                try:
                    ih = q["info_hash"][0]
                    port = int(q["port"][0])
                    left = int(q.get("left", [b"0"])[0])
                    numwant = int(q.get("numwant", q.get("num_want", [b"50"]))[0])
                    event = q.get("event", [b"none"])[0].decode() or "none"
                    if len(ih) != 20:
                        raise ValueError("info_hash length %d" % len(ih))
                except (KeyError, ValueError) as e:
                    return self.reply(bencode({"failure reason": "bad request: %s" % e}))
                s_, l_, peers = announce(ih, ip, port, left, event, numwant)
                say("http announce %s %s:%d left=%d event=%s -> %d peers"
                    % (ih.hex(), ip, port, left, event, len(peers)))
                return self.reply(bencode({
                    "interval": interval, "complete": s_, "incomplete": l_,
                    "peers": compact(peers, socket.AF_INET),
                    "peers6": compact(peers, socket.AF_INET6)}))
            if path == "/scrape":
                files = {}
                for ih in q.get("info_hash", []):
                    s_, d_, l_ = scrape(ih)
                    files[ih] = {"complete": s_, "downloaded": d_, "incomplete": l_}
                return self.reply(bencode({"files": files}))
            return self.reply(b"not found", 404)

    class V4(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    class V6(V4):
        address_family = socket.AF_INET6

    binds = [(socket.AF_INET, "127.0.0.1", V4)]
    if a.v6:
        binds.append((socket.AF_INET6, "::1", V6))
    threads = []
    bound = {"udp": [], "http": []}
    for fam, host, srv_cls in binds:
        # port 0: the harness reads the ports from the line printed below
        u = socket.socket(fam, socket.SOCK_DGRAM)
        u.bind((host, 0))
        threads.append(threading.Thread(target=udp_loop, args=(u, fam), daemon=True))
        srv = srv_cls((host, 0), Handler)
        threads.append(threading.Thread(target=srv.serve_forever, daemon=True))
        for proto, port in (("udp", u.getsockname()[1]), ("http", srv.server_address[1])):
            bound[proto].append("%s:%d" % ("[%s]" % host if ":" in host else host, port))
    for t in threads:
        t.start()
    say("ports udp=[%s] http=[%s]" % (", ".join(bound["udp"]), ", ".join(bound["http"])))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    parent = os.getppid()
    while not stop and os.getppid() == parent:
        time.sleep(0.2)
    return 0


# --------------------------------------------------------------------------- libtorrent worker

def lt_worker(argv):
    ap = argparse.ArgumentParser(prog="e2e.py lt-worker")
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--save", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--role", choices=["seed", "leech"], required=True)
    ap.add_argument("--ip4", default="127.0.0.1")
    a = ap.parse_args(argv)
    import libtorrent as lt

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    cat = lt.alert_category
    settings = {
        "listen_interfaces": "%s:%d,[::1]:%d" % (a.ip4, a.port, a.port) if HAVE_V6
        else "%s:%d" % (a.ip4, a.port),
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        # TCP only: uTP between these clients on loopback is slow (seconds for a few MB)
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
        "user_agent": "hayate-e2e/libtorrent-" + lt.__version__,
        "alert_mask": cat.error | cat.status | cat.tracker | cat.connect | cat.peer | cat.storage,
    }
    ses = lt.session(settings)
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(a.torrent)
    atp.save_path = a.save
    atp.flags = (atp.flags | lt.torrent_flags.disable_pex | lt.torrent_flags.disable_dht
                 | lt.torrent_flags.disable_lsd) & ~lt.torrent_flags.auto_managed \
        & ~lt.torrent_flags.paused
    h = ses.add_torrent(atp)
    parent = os.getppid()
    t0 = time.monotonic()
    finished = False
    last_status = 0
    print("lt-worker %s: libtorrent %s, torrent %s, port %d"
          % (a.role, lt.__version__, a.torrent, a.port), flush=True)
    while not stop and os.getppid() == parent:  # leave when the harness is gone
        ses.wait_for_alert(500)
        for al in ses.pop_alerts():
            print("[%6.2f] %s: %s" % (time.monotonic() - t0, al.what(), al.message()), flush=True)
        st = h.status()
        if time.monotonic() - last_status >= 2:
            last_status = time.monotonic()
            print("[%6.2f] status: state=%s progress=%.3f peers=%d seeds=%d"
                  % (time.monotonic() - t0, st.state, st.progress, st.num_peers, st.num_seeds),
                  flush=True)
        if a.role == "leech" and st.is_finished and not finished:
            finished = True
            print("[%6.2f] FINISHED" % (time.monotonic() - t0), flush=True)
    print("lt-worker: stopping", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "lt-worker":
        sys.exit(lt_worker(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "mini-tracker":
        sys.exit(mini_tracker(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
