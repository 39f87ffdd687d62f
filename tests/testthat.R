library(testthat)
library(scribeR)

test_check("scribeR")
