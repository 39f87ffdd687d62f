#!/usr/bin/env bash
# Installs what scribeR needs on a fresh Debian 12 machine: R and the R
# packages from Debian (r-base-dev, r-cran-*, r-bioc-*), and a Rust
# toolchain new enough for the core (rustup's ~/.cargo/bin; rustup installs
# one when there is none, since Debian's rustc is too old). Idempotent:
# `apt-get update` runs only when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)

PKGS=(
  r-base-dev
  r-cran-matrix r-cran-cli r-cran-rlang
  r-bioc-summarizedexperiment r-bioc-singlecellexperiment r-bioc-delayedarray
  r-cran-seuratobject
  r-cran-testthat r-cran-pkgbuild r-cran-roxygen2
  r-cran-ggplot2 r-cran-knitr r-cran-rmarkdown pandoc r-cran-uwot
  r-cran-posterior r-cran-loo
  # R CMD check --as-cran: checkbashisms (configure), qpdf; the pkgdown site
  devscripts qpdf r-cran-pkgdown
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
# The Rust core needs rustc >= the rust-version of src/rust/Cargo.toml.
# Debian's own rustc is older (bookworm: 1.63), so a missing toolchain comes
# from rustup, never silently from apt.
min_rust=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' src/rust/Cargo.toml)
if ! command -v cargo >/dev/null; then
  echo "setup: no Rust toolchain on PATH or in ~/.cargo/bin; installing rustup's stable (needs >= $min_rust)"
  command -v curl >/dev/null || $SUDO apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt >/dev/null \
    || { echo "setup: could not install Rust with rustup (https://rustup.rs); install rustc >= $min_rust and rerun"; exit 1; }
fi
have_rust=$(rustc --version | sed -n 's/^rustc \([0-9.]*\).*/\1/p')
if [ "$(printf '%s\n%s\n' "$min_rust" "$have_rust" | sort -V | head -1)" != "$min_rust" ]; then
  echo "setup: rustc $have_rust ($(command -v rustc)) is older than $min_rust, which scribeR needs;"
  echo "       update it (rustup update stable) or put a newer toolchain first on PATH"
  exit 1
fi
echo "setup: $(R --version | head -1); $(cargo --version); $(( $(date +%s) - start )) s"
