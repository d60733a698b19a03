# glmer timings for benchmarks/glmm_benchmark.py.
# Usage: Rscript benchmarks/glmm.R CASE DATA_DIR REPEATS
# Prints one JSON line: the median of REPEATS whole glmer calls after one warm-up,
# every time, and the fit's -2 log L (lme4's, nAGQ > 1 without the saturated constant).
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
case <- args[1]; dir <- args[2]; repeats <- as.integer(args[3])
fit <- switch(case,
  cbpp = {
    d <- read.csv(file.path(dir, "cbpp.csv")); d$period <- factor(d$period); d$herd <- factor(d$herd)
    function() glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), d, binomial)
  },
  cbpp_agq25 = {
    d <- read.csv(file.path(dir, "cbpp.csv")); d$period <- factor(d$period); d$herd <- factor(d$herd)
    function() glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), d, binomial, nAGQ = 25)
  },
  grouseticks = {
    d <- read.csv(file.path(dir, "grouseticks.csv"))
    for (f in c("YEAR", "BROOD", "INDEX", "LOCATION")) d[[f]] <- factor(d[[f]])
    function() glmer(TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), d, poisson)
  },
  verbagg = {
    d <- read.csv(file.path(dir, "VerbAgg.csv.gz"))
    for (f in c("Gender", "btype", "situ", "id", "item", "r2")) d[[f]] <- factor(d[[f]])
    d$btype <- factor(d$btype, levels = c("curse", "scold", "shout"))
    function() glmer(r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item), d, binomial)
  },
  many = {
    # DATA_DIR is the CSV of the many-responses design (x1, x2, g, y0, y1, ...):
    # REPEATS responses are fitted one after another, each timed.
    d <- read.csv(dir); d$g <- factor(d$g)
    k <- 0
    function() {
      k <<- k + 1
      d$y <- d[[sprintf("y%d", (k - 1) %% repeats)]]
      glmer(y ~ x1 + x2 + (1 | g), d, binomial)
    }
  },
  stop("unknown case ", case)
)
m <- fit()
times <- sapply(seq_len(repeats), function(i) system.time(fit())[["elapsed"]])
cat(sprintf('{"median_s": %.6f, "times": [%s], "minus2logLik": %.10f}\n',
            median(times), paste(sprintf("%.6f", times), collapse = ", "), -2 * as.numeric(logLik(m))))
