#!/usr/bin/env bash
# Prepares a fresh Debian/Ubuntu machine for wgformer: a Vulkan driver (Mesa's
# software "lavapipe" when no GPU driver is installed) and the Rust toolchain check.
# Safe to run again: it installs only what is missing.
#   --mpi   also MPI for the `mpi` feature (`mpirun -np N wgformer train --parallel
#           data`): Open MPI's runtime and headers, and libclang for rsmpi's bindgen.
set -euo pipefail

WANT_MPI=0
for arg in "$@"; do
  case "$arg" in
    --mpi) WANT_MPI=1 ;;
    *) echo "setup: unknown option $arg (known: --mpi)" >&2; exit 2 ;;
  esac
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

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
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi

if [ "$WANT_MPI" -eq 1 ]; then
  if command -v mpirun >/dev/null && command -v mpicc >/dev/null \
    && [ -n "$(ldconfig -p | grep 'libclang' || true)" ]; then
    echo "setup: MPI found: $(mpirun --version | head -1)"
  else
    echo "setup: installing Open MPI and libclang (the mpi feature)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
      libopenmpi-dev openmpi-bin libclang-dev >/dev/null
  fi
fi

command -v cargo >/dev/null || {
  echo "setup: cargo not found; install Rust from your distribution or rustup first" >&2
  exit 1
}
echo "setup: done"
