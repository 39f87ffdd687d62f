#!/usr/bin/env bash
# Builds the pkgdown reference site into docs/ from the installed package,
# offline (no CRAN or Bioconductor lookups). Installs r-cran-pkgdown from
# Debian if it is missing. Usage (from the repository root): bash tools/site.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! Rscript -e 'quit(status = !requireNamespace("pkgdown", quietly = TRUE))'; then
  SUDO=""; if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get install -y -qq --no-install-recommends r-cran-pkgdown >/dev/null
fi
# Examples and the article run against the installed package.
Rscript -e 'pkgdown::check_pkgdown(); pkgdown::build_site(".", install = FALSE, new_process = FALSE, preview = FALSE, devel = FALSE)' 
echo "site: docs/index.html"
