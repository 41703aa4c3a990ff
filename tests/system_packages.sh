#!/bin/sh
# Installs the real programs some tests run beside chunkswarm (a browser, a Redis server,
# BitTorrent clients and trackers, Syncthing, wrk), from Debian's packages, when any is missing.
# The README's test command runs this first; it changes nothing when all are there.
#
# Without root (and without password-less sudo) it installs nothing and says what is missing:
# the tests that need a missing program then skip with that reason, except under CI=true,
# where they fail (a CI run must test everything).
set -eu

# Debian package -> what the tests look for (tests/system.py).
PACKAGES="chromium redis-server aria2 python3-libtorrent opentracker wrk syncthing mktorrent iproute2 curl"

missing=""
for package in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $package"
  fi
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system_packages.sh: no apt-get here; tests needing these will skip:$missing" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  run=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  run="sudo -n"
else
  echo "system_packages.sh: not root; tests needing these will skip:$missing" >&2
  exit 0
fi

echo "system_packages.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$run apt-get update -qq >&2
# shellcheck disable=SC2086
$run apt-get install -y -qq --no-install-recommends $missing >&2
