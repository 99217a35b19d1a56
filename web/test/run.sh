#!/usr/bin/env bash
# Builds the demo (web/build.sh) and runs the browser test in headless Chromium
# with WebGPU on SwiftShader. Installs what is missing first: Chromium and
# Node.js from Debian (web/test/setup.sh), playwright-core from npm.
# Leaves target/web-test.png (screenshot) and target/web-test.json (figures).
set -euo pipefail
cd "$(dirname "$0")"

./setup.sh
../build.sh
if [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund
fi
node browser-test.mjs
