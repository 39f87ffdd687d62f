#!/usr/bin/env bash
# Runs every test: the Rust core's cargo tests, fmt and clippy, then the R
# package's testthat suite on the installed package (including the README's
# R example), then R CMD build + R CMD check (examples and vignette; the
# tests already ran). Usage (from the repository root): bash tools/test.sh
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
  cargo clippy --release --manifest-path src/rust/Cargo.toml -p scribe-core --all-targets -q -- -D warnings
  cargo clippy --release --manifest-path src/rust/Cargo.toml -p scribe-r -q -- -D warnings
fi

echo "== R CMD INSTALL"
bash tools/install.sh

echo "== testthat"
Rscript -e 'res <- testthat::test_local(".", load_package = "installed", reporter = testthat::ProgressReporter$new(show_praise = FALSE), stop_on_failure = TRUE); df <- as.data.frame(res); cat(sprintf("testthat: %d passed, %d failed, %d skipped\n", sum(df$passed), sum(df$failed), sum(df$skipped)))'

echo "== R CMD build + check (examples, vignette; tests ran above)"
R CMD build --no-manual . >"$work/build.log" 2>&1 || { tail -60 "$work/build.log"; exit 1; }
mv scribeR_*.tar.gz "$work/"
( cd "$work" && _R_CHECK_FORCE_SUGGESTS_=false R CMD check --no-manual --no-tests scribeR_*.tar.gz >check.log 2>&1 ) || true
grep -E "^Status:|WARNING|ERROR" "$work/check.log" || true
if ! grep -q "^Status: OK\|^Status: [0-9]* NOTE" "$work/check.log"; then
  echo "R CMD check did not pass:"; tail -80 "$work/check.log"
  find "$work" -name "*.Rout.fail" -exec tail -40 {} \;
  exit 1
fi
echo "== all tests passed"
