#!/usr/bin/env bash
# Checks systemd/hayate.service as systemd would load it: `systemd-analyze verify` (any warning
# fails), then `systemd-analyze security` offline, which must rate it 2.0 or lower ("OK").
# verify needs ExecStart's binary to exist, so a temporary copy of the unit points at a built
# one: $1, or target/release/hayate (built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-target/release/hayate}"
[ -x "$bin" ] || cargo build --release --quiet
bin="$(realpath "$bin")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/bin/hayate|$bin|" systemd/hayate.service > "$tmp/hayate.service"

echo "== systemd-analyze verify systemd/hayate.service"
out="$(systemd-analyze verify "$tmp/hayate.service" 2>&1)" || { echo "$out"; exit 1; }
if [ -n "$out" ]; then
  echo "$out"
  echo "systemd-analyze verify printed warnings" >&2
  exit 1
fi
echo "ok"

echo "== systemd-analyze security systemd/hayate.service"
systemd-analyze security --offline=yes --no-pager --threshold=20 "$tmp/hayate.service" | tail -n 3
