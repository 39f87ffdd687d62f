#!/usr/bin/env bash
# Builds the Rust core and installs scribeR into the first R library,
# showing cargo's progress (a cold build takes a few minutes) and saying
# where the package goes. Used by tools/demo.sh and tools/test.sh.
# Usage (from the repository root): bash tools/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$HOME/.cargo/bin"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/src/rust/target}"
lib=$(Rscript -e 'cat(.libPaths()[1])')
echo "install: building scribeR (Rust core in $CARGO_TARGET_DIR) and installing it into $lib"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! R CMD INSTALL --no-multiarch . 2>&1 | tee "$log" |
     grep --line-buffered -E '^ +(Compiling|Finished) |^\* (installing|DONE)'; then
  echo "install: R CMD INSTALL failed; its last lines:"
  tail -60 "$log"
  exit 1
fi
