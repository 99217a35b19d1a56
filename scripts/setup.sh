#!/usr/bin/env bash
# Prepares a fresh Debian/Ubuntu machine for wgformer: a Vulkan driver (Mesa's
# software "lavapipe" when no GPU driver is installed) and the Rust toolchain check.
# Safe to run again: it installs only what is missing.
set -euo pipefail

icd_files() {
  find /usr/share/vulkan/icd.d /etc/vulkan/icd.d -name '*.json' 2>/dev/null || true
}

have_vulkan_icd() {
  [ -n "$(icd_files)" ] && [ -n "$(ldconfig -p | grep 'libvulkan.so.1' || true)" ]
}

if have_vulkan_icd; then
  echo "setup: Vulkan drivers found: $(icd_files | xargs -n1 basename | tr '\n' ' ')"
else
  echo "setup: no Vulkan driver found; installing Mesa's software Vulkan (lavapipe)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi

command -v cargo >/dev/null || {
  echo "setup: cargo not found; install Rust from your distribution or rustup first" >&2
  exit 1
}
echo "setup: done"
