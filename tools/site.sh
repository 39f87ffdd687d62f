#!/usr/bin/env bash
# Builds the pkgdown reference site (reference index from _pkgdown.yml, the
# vignette as an article) from the installed package, offline
# (pkgdown.internet = FALSE: no CRAN or Bioconductor lookups), into docs/ or
# the folder given. Installs r-cran-pkgdown from Debian if it is missing.
# Usage (from the repository root): bash tools/site.sh [destination]
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-docs}"
if ! Rscript -e 'quit(status = !requireNamespace("pkgdown", quietly = TRUE))'; then
  SUDO=""; if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get install -y -qq --no-install-recommends r-cran-pkgdown >/dev/null
fi
Rscript -e 'options(pkgdown.internet = FALSE); pkgdown::check_pkgdown()' \
  -e 'pkgdown::build_site(".", install = FALSE, new_process = FALSE, preview = FALSE, devel = FALSE,' \
  -e '                    override = list(destination = commandArgs(TRUE)[1]))' "$dest"
echo "site: $dest/index.html"
