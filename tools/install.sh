#!/usr/bin/env bash
# Builds the Rust core and installs scribeR into the first R library,
# showing cargo's progress (a cold build takes a few minutes) and saying
# where the package goes. Used by tools/demo.sh and tools/test.sh.
# Usage (from the repository root): bash tools/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$HOME/.cargo/bin"
# A development install keeps cargo's warm target directory and its download
# cache in ~/.cargo, and uses the quicker release profile; the package's own
# default (src/Makevars.in) is a clean, LTO build with a throwaway cargo home.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/src/rust/target}"
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
export SCRIBER_CARGO_PROFILE="${SCRIBER_CARGO_PROFILE:-release}"
lib=$(Rscript -e 'cat(.libPaths()[1])')
echo "install: building scribeR (Rust core in $CARGO_TARGET_DIR) and installing it into $lib"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! R CMD INSTALL --no-multiarch . 2>&1 | tee "$log" |
     grep --line-buffered -E '^ +(Compiling|Finished) |^\* (installing|DONE)|^configure: |^scribeR: '; then
  echo "install: R CMD INSTALL failed; its last lines:"
  tail -60 "$log"
  exit 1
fi
