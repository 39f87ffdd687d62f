#!/usr/bin/env bash
# The main job: install what is missing, build and install scribeR, fit
# nbvcp by SVI to the bundled pbmc3k subset, print the fit and write a
# loss-curve PNG to demo-out/. Usage (from the repository root):
#   bash tools/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/install.sh
mkdir -p demo-out
Rscript inst/scripts/demo.R demo-out
