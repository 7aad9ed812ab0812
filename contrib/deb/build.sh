#!/usr/bin/env bash
# Builds hayate's Debian package and checks it: the release binary, stripped by cargo-deb; the man
# page hayate(1), generated from the same clap definitions as `hayate --help`; the unit, the
# default config (a conffile), the README, the licences and a Debian changelog; then lintian (any
# error fails) and the package's file list. .ci/run runs it; so can you:
#
#   cargo install cargo-deb --locked && sudo apt install lintian   # once
#   bash contrib/deb/build.sh                                       # -> target/debian/hayate_*.deb
set -euo pipefail
cd "$(dirname "$0")/../.."

mkdir -p target/man
cargo run --release --locked --quiet --example man_page > target/man/hayate.1
gzip -9nf target/man/hayate.1
# The changelog Debian wants, compressed as Debian policy says.
gzip -9nc contrib/deb/changelog > target/man/changelog.Debian.gz

maintainer=()
[ -n "${DEB_MAINTAINER:-}" ] && maintainer=(--maintainer "$DEB_MAINTAINER")
# --strip: the release profile keeps line tables for profiling; the package does not need them.
cargo deb --locked --quiet --strip "${maintainer[@]}"
version="$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')"
deb="$(ls target/debian/hayate_"${version}"-1_*.deb)"
echo "== $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb --info "$deb"
dpkg -c "$deb" | tee target/debian/contents.txt
for path in usr/bin/hayate etc/hayate/config.toml usr/lib/systemd/system/hayate.service \
    usr/share/man/man1/hayate.1.gz usr/share/doc/hayate/copyright \
    usr/share/doc/hayate/changelog.Debian.gz usr/share/doc/hayate/README.md; do
  grep -q " \./$path\$" target/debian/contents.txt || { echo "missing from the package: /$path" >&2; exit 1; }
done
# Errors fail the build; warnings are printed for the record.
lintian --fail-on error --tag-display-limit 0 "$deb"
