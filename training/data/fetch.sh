#!/bin/sh
# Download the public-domain sources as Debian packages and unpack them under training/work/raw.
# Nothing is installed: `apt-get download` fetches the .deb, `dpkg -x` unpacks it into a folder.
# bible-kjv (the reader program) is fetched only to decompress bible-kjv-text's packed data file.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
work="$here/work"
mkdir -p "$work/debs" "$work/raw"
cd "$work/debs"
if [ ! -s "$work/debs/.fetched" ]; then
  apt-get update >/dev/null
  apt-get download bible-kjv-text bible-kjv r-cran-janeaustenr jargon-text dict-devil wordnet-base
  date -u +%Y-%m-%dT%H:%M:%SZ >"$work/debs/.fetched"
fi
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/raw"; done
ls -l "$work"/debs/*.deb
