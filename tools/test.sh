#!/usr/bin/env bash
# Runs every test: the Rust core's cargo tests, fmt and clippy, then the R
# package's testthat suite on the installed package (including the README's
# R example), the offline pkgdown site, then the release path: the crates
# vendored into the source tarball (tools/vendor.sh), R CMD build, and
# R CMD check --as-cran of that tarball offline with an empty cargo home.
# Usage (from the repository root): bash tools/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export PATH="$PATH:$HOME/.cargo/bin"
# One cargo target directory for cargo test, R CMD INSTALL and R CMD check,
# so the Rust core is compiled once per profile.
export CARGO_TARGET_DIR="$PWD/src/rust/target"
export NOT_CRAN=true
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== cargo test (scribe-core)"
cargo test --release --manifest-path src/rust/Cargo.toml -p scribe-core

if cargo clippy --version >/dev/null 2>&1 && cargo fmt --version >/dev/null 2>&1; then
  echo "== cargo fmt --check, cargo clippy -D warnings"
  cargo fmt --manifest-path src/rust/Cargo.toml --all -- --check
  cargo fmt --manifest-path bench/rust/Cargo.toml -- --check
  cargo clippy --release --manifest-path src/rust/Cargo.toml -p scribe-core --all-targets -q -- -D warnings
  cargo clippy --release --manifest-path src/rust/Cargo.toml -p scribe-r -q -- -D warnings
  # The criterion benches: their own workspace (bench/rust), kept compiling.
  cargo clippy --release --manifest-path bench/rust/Cargo.toml --all-targets -q -- -D warnings
fi

echo "== R CMD INSTALL"
bash tools/install.sh

echo "== testthat"
Rscript -e 'res <- testthat::test_local(".", load_package = "installed", reporter = testthat::ProgressReporter$new(show_praise = FALSE), stop_on_failure = TRUE); df <- as.data.frame(res); cat(sprintf("testthat: %d passed, %d failed, %d skipped\n", sum(df$passed), sum(df$failed), sum(df$skipped)))'

echo "== pkgdown site (offline)"
bash tools/site.sh "$work/site" >"$work/site.log" 2>&1 || { tail -40 "$work/site.log"; exit 1; }

echo "== R CMD build of the vendored tree, then R CMD check --as-cran offline"
# What CRAN and r-universe get: the crates travel in the tarball, the build
# runs with an empty cargo home, no network (CARGO_NET_OFFLINE) and the
# package's own LTO profile; tests run as on CRAN (NOT_CRAN unset).
bash tools/vendor.sh
trap 'rm -rf "$work" src/rust/vendor.tar.xz' EXIT
R CMD build --no-manual . >"$work/build.log" 2>&1 || { tail -60 "$work/build.log"; exit 1; }
rm -f src/rust/vendor.tar.xz
mv scribeR_*.tar.gz "$work/"
tarball=$(ls "$work"/scribeR_*.tar.gz)
size_kb=$(( $(stat -c %s "$tarball") / 1024 ))
echo "tarball: $(basename "$tarball"), ${size_kb} KB"
if [ "$size_kb" -gt 5120 ]; then echo "the source tarball is over CRAN's 5 MB"; exit 1; fi
mkdir -p "$work/cargo-home"
# Only the checks that need the internet are off: CRAN's package database
# and the time server behind the future-timestamps check. No PDF manual
# (no LaTeX here).
( cd "$work" && env -u CARGO_TARGET_DIR -u NOT_CRAN -u SCRIBER_CARGO_PROFILE \
    CARGO_HOME="$work/cargo-home" CARGO_NET_OFFLINE=true \
    _R_CHECK_CRAN_INCOMING_REMOTE_=false _R_CHECK_FUTURE_FILE_TIMESTAMPS_=false \
    _R_CHECK_FORCE_SUGGESTS_=false \
    R CMD check --as-cran --no-manual "$(basename "$tarball")" >check.log 2>&1 ) || true
grep -E "^Status:|WARNING|ERROR|NOTE|installed size" "$work/check.log" || true
grep -h "Finished .r-package" "$work"/scribeR.Rcheck/00install.out || true
if ! grep -q "^Status: OK\|^Status: [0-9]* NOTE" "$work/check.log"; then
  echo "R CMD check did not pass:"; tail -80 "$work/check.log"
  find "$work" -name "*.Rout.fail" -exec tail -40 {} \;
  exit 1
fi
# Offline, --as-cran always notes that it could not ask a time server; an
# installed-size note is allowed too. Any other NOTE fails.
other_notes=$(grep -E "\.\.\. NOTE$" "$work/check.log" |
  grep -v -E "checking for future file timestamps|checking installed package size" || true)
if [ -n "$other_notes" ]; then
  echo "R CMD check gave notes:"; echo "$other_notes"; exit 1
fi
echo "== all tests passed"
