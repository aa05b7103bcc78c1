#!/usr/bin/env bash
# Vendor the Twilio Voice JS SDK for the caller page: install the version pinned in
# sdk/package-lock.json and copy its browser bundle to static/vendor/ (gitignored).
# Run in setup and before the browser tests:  bash voice_app/web/build.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sdk="$here/sdk"
vendor="$here/static/vendor"

command -v npm >/dev/null || { echo "build.sh: npm is required (apt-get install -y npm)" >&2; exit 1; }
npm ci --prefix "$sdk" --ignore-scripts --no-audit --no-fund --loglevel=error
mkdir -p "$vendor"
dist="$sdk/node_modules/@twilio/voice-sdk"
cp "$dist/dist/twilio.min.js" "$vendor/twilio.min.js"
cp "$dist/LICENSE.md" "$vendor/twilio-voice-sdk.LICENSE.md" 2>/dev/null || true
version="$(node -p "require('$dist/package.json').version" 2>/dev/null || echo unknown)"
echo "vendored @twilio/voice-sdk $version -> ${vendor#"$PWD"/}/twilio.min.js"
