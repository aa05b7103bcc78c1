#!/usr/bin/env bash
# Build the agent console into voice_app/console/static/ (gitignored), served at /console/.
# JsSIP is pinned exactly (3.13.8) in package-lock.json; `npm ci` installs exactly that.
set -euo pipefail
cd "$(dirname "$0")"
OUT=../voice_app/console/static

if [ ! -d node_modules/jssip ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
mkdir -p "$OUT"
./node_modules/.bin/esbuild src/console.js --bundle --format=iife --platform=browser \
  --target=chrome100,firefox100,safari15 --minify --log-level=warning \
  --outfile="$OUT/console.js"
cp src/index.html src/console.css "$OUT/"
echo "agent console built into voice_app/console/static/"
