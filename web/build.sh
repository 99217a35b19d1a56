#!/usr/bin/env bash
# Builds the browser demo: the library for wasm32 (wgpu's WebGPU backend), then
# the JS glue with the wasm-bindgen CLI into web/pkg/ (ignored by git).
# Installs the wasm32 target and wasm-bindgen-cli at the exact version Cargo.lock
# pins when they are missing (the CLI and the library's wasm-bindgen must match).
# Then serve web/ over http on localhost, e.g. `python3 -m http.server -d web 8000`.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${WGFORMER_WEB_PROFILE:-release}"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

want="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
if [ -z "$want" ]; then
  echo "build.sh: no wasm-bindgen in Cargo.lock; run \`cargo generate-lockfile\` first" >&2
  exit 1
fi
have="$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)"
if [ "$have" != "$want" ]; then
  echo "build.sh: installing wasm-bindgen-cli $want (found: ${have:-none})"
  cargo install wasm-bindgen-cli --version "$want"
fi

# A cdylib only for this build: native builds of the crate stay rlib-only.
flags=(--lib --target wasm32-unknown-unknown --crate-type cdylib)
if [ "$profile" = release ]; then
  flags+=(--release)
fi
cargo rustc "${flags[@]}"

out="web/pkg"
rm -rf "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" \
  "target/wasm32-unknown-unknown/$profile/wgformer.wasm"
echo "build.sh: wrote $out/ ($(du -h "$out/wgformer_bg.wasm" | cut -f1) of wasm); serve web/ on localhost and open it"
