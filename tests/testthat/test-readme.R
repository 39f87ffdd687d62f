# Every line of the README's R example runs as written, in a fresh R process,
# so that what a new user copies works. The README is not part of the built
# package: this test runs where the sources are (tools/test.sh, CI).

test_that("the README's R example runs as written", {
  readme <- file.path(testthat::test_path(), "..", "..", "README.md")
  skip_if_not(file.exists(readme), "README.md is not next to the tests (installed package)")
  skip_on_cran()
  lines <- readLines(readme)
  start <- which(lines == "```r")[1]
  end <- start + which(lines[-seq_len(start)] == "```")[1]
  expect_false(is.na(start) || is.na(end))
  block <- lines[(start + 1):(end - 1)]
  script <- tempfile(fileext = ".R")
  on.exit(unlink(script))
  writeLines(c("options(warn = 1)", block, "cat('README block: done\\n')"), script)
  out <- system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE)
  status <- attr(out, "status")
  expect_true(is.null(status) || status == 0, info = paste(utils::tail(out, 30), collapse = "\n"))
  expect_true(any(grepl("README block: done", out)), info = paste(utils::tail(out, 30), collapse = "\n"))
  expect_false(any(grepl("^Warning", out)), info = paste(grep("^Warning", out, value = TRUE), collapse = "\n"))
})
