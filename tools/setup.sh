#!/usr/bin/env bash
# Installs what scribeR needs on a fresh Debian 12 machine: R and the R
# packages from Debian (r-base-dev, r-cran-*, r-bioc-*), and checks for a
# Rust toolchain (rustup's ~/.cargo/bin, else Debian's cargo). Idempotent:
# `apt-get update` runs only when something is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)

PKGS=(
  r-base-dev
  r-cran-matrix r-cran-cli r-cran-rlang
  r-bioc-summarizedexperiment r-bioc-singlecellexperiment r-bioc-delayedarray
  r-cran-seuratobject
  r-cran-testthat r-cran-pkgbuild r-cran-roxygen2
  r-cran-ggplot2 r-cran-knitr r-cran-rmarkdown pandoc
  r-cran-posterior r-cran-loo
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${#missing[@]} Debian package(s): ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/scribeR-apt.log 2>&1 \
    || { tail -50 /tmp/scribeR-apt.log; exit 1; }
fi

export PATH="$PATH:$HOME/.cargo/bin"
if ! command -v cargo >/dev/null; then
  echo "setup: no Rust toolchain in ~/.cargo/bin; installing Debian's cargo"
  $SUDO apt-get install -y -qq --no-install-recommends cargo rustc >/tmp/scribeR-apt.log 2>&1 \
    || { tail -50 /tmp/scribeR-apt.log; exit 1; }
fi
echo "setup: $(R --version | head -1); $(cargo --version); $(( $(date +%s) - start )) s"
