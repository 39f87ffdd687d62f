#!/usr/bin/env bash
# Runs every test: the Rust core's cargo tests, then the R package's testthat
# suite on the installed package, then R CMD build + R CMD check.
# Usage (from the repository root): bash tools/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
export PATH="$PATH:$HOME/.cargo/bin"
# One cargo target directory for cargo test, R CMD INSTALL and R CMD check,
# so the Rust core is compiled once per profile.
export CARGO_TARGET_DIR="$PWD/src/rust/target"
export NOT_CRAN=true

echo "== cargo test (scribe-core)"
cargo test --release --manifest-path src/rust/Cargo.toml -p scribe-core

if cargo clippy --version >/dev/null 2>&1 && cargo fmt --version >/dev/null 2>&1; then
  echo "== cargo fmt --check, cargo clippy -D warnings"
  cargo fmt --manifest-path src/rust/Cargo.toml --all -- --check
  cargo clippy --release --manifest-path src/rust/Cargo.toml -p scribe-core --all-targets -q -- -D warnings
  cargo clippy --release --manifest-path src/rust/Cargo.toml -p scribe-r -q -- -D warnings
fi

echo "== R CMD INSTALL"
R CMD INSTALL --no-multiarch . >/tmp/scribeR-install.log 2>&1 || { tail -60 /tmp/scribeR-install.log; exit 1; }

echo "== testthat"
Rscript -e 'res <- testthat::test_local(".", load_package = "installed", reporter = testthat::ProgressReporter$new(show_praise = FALSE), stop_on_failure = TRUE); df <- as.data.frame(res); cat(sprintf("testthat: %d passed, %d failed, %d skipped\n", sum(df$passed), sum(df$failed), sum(df$skipped)))'

echo "== R CMD build + check"
tmp=$(mktemp -d)
R CMD build --no-manual . >/tmp/scribeR-build.log 2>&1 || { tail -60 /tmp/scribeR-build.log; exit 1; }
mv scribeR_*.tar.gz "$tmp/"
( cd "$tmp" && _R_CHECK_FORCE_SUGGESTS_=false R CMD check --no-manual scribeR_*.tar.gz >check.log 2>&1 ) || true
grep -E "^Status:|WARNING|ERROR" "$tmp/check.log" || true
if ! grep -q "^Status: OK\|^Status: [0-9]* NOTE" "$tmp/check.log"; then
  echo "R CMD check did not pass:"; tail -80 "$tmp/check.log"
  find "$tmp" -name "*.Rout.fail" -exec tail -40 {} \;
  exit 1
fi
echo "== all tests passed"
