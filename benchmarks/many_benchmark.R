# lme4 side of benchmarks/many_benchmark.py (called through Rscript; see that file).
#
#   Rscript many_benchmark.R fits <data.csv> <formula> <factor columns, comma-separated> <out.csv>
#       Every column of data.csv whose name starts with "r_" is a response. Each is
#       fitted with a fresh lmer(<formula>, REML = TRUE), the formula's response
#       being "y". Writes per response: REML criterion (REMLcrit), isSingular,
#       seconds of lmer (model construction plus fit, proc.time elapsed), the
#       number of convergence messages other than the singular-fit note. Prints "TOTAL <seconds>" (the sum) and
#       "LOOP <seconds>" (the whole loop, copying the response included).
#
#   Rscript many_benchmark.R boot <nsim> <seed> <out.csv>
#       sleepstudy, lmer(Reaction ~ Days + (Days | Subject), REML = TRUE), then
#       bootMer(m, FUN = function(x) c(fixef(x), getME(x, "theta"), sigma(x)),
#       nsim = nsim) after set.seed(seed). Writes the replicates (one row each)
#       and prints "FIT <seconds>", "BOOT <seconds>" and "ORIGINAL <values>".
#
# Both print "VERSIONS <R version>; lme4 <version>".

suppressPackageStartupMessages(library(lme4))

args <- commandArgs(trailingOnly = TRUE)
mode <- args[1]
cat("VERSIONS ", R.version.string, "; lme4 ", as.character(packageVersion("lme4")), "\n", sep = "")

if (mode == "fits") {
  csv <- args[2]
  form <- as.formula(args[3])
  factors <- strsplit(args[4], ",")[[1]]
  out <- args[5]
  header <- names(read.csv(csv, nrows = 1, check.names = FALSE))
  classes <- setNames(rep("numeric", length(header)), header)
  classes[factors] <- "factor"
  wide <- read.csv(csv, colClasses = classes, check.names = FALSE)
  responses <- header[startsWith(header, "r_")]
  base <- wide[, setdiff(header, responses), drop = FALSE]
  k <- length(responses)
  objective <- rep(NA_real_, k)
  singular <- rep(NA, k)
  seconds <- rep(NA_real_, k)
  n_messages <- rep(NA_integer_, k)
  loop0 <- proc.time()[["elapsed"]]
  for (j in seq_len(k)) {
    d <- base
    d$y <- wide[[responses[j]]]
    t0 <- proc.time()[["elapsed"]]
    m <- tryCatch(suppressMessages(suppressWarnings(lmer(form, data = d, REML = TRUE))),
                  error = function(e) NULL)
    seconds[j] <- proc.time()[["elapsed"]] - t0
    if (!is.null(m)) {
      objective[j] <- REMLcrit(m)
      singular[j] <- isSingular(m)
      msgs <- m@optinfo$conv$lme4$messages  # other than the "boundary (singular) fit" note
      n_messages[j] <- sum(!grepl("singular", msgs))
    }
  }
  loop <- proc.time()[["elapsed"]] - loop0
  write.csv(data.frame(response = responses, objective = sprintf("%.17g", objective),
                       singular = singular, seconds = seconds, n_messages = n_messages),
            out, row.names = FALSE, quote = FALSE)
  cat("TOTAL ", sprintf("%.6f", sum(seconds)), "\n", sep = "")
  cat("LOOP ", sprintf("%.6f", loop), "\n", sep = "")
} else if (mode == "boot") {
  nsim <- as.integer(args[2])
  seed <- as.integer(args[3])
  out <- args[4]
  data(sleepstudy, package = "lme4")
  t0 <- proc.time()[["elapsed"]]
  m <- lmer(Reaction ~ Days + (Days | Subject), data = sleepstudy, REML = TRUE)
  fit_s <- proc.time()[["elapsed"]] - t0
  set.seed(seed)
  t0 <- proc.time()[["elapsed"]]
  b <- suppressMessages(suppressWarnings(
    bootMer(m, FUN = function(x) c(fixef(x), getME(x, "theta"), sigma(x)), nsim = nsim)
  ))
  boot_s <- proc.time()[["elapsed"]] - t0
  reps <- as.data.frame(b$t)
  names(reps) <- c(names(fixef(m)), names(getME(m, "theta")), "sigma")
  write.csv(reps, out, row.names = FALSE)
  cat("FIT ", sprintf("%.6f", fit_s), "\n", sep = "")
  cat("BOOT ", sprintf("%.6f", boot_s), "\n", sep = "")
  cat("ORIGINAL ", paste(sprintf("%.17g", b$t0), collapse = " "), "\n", sep = "")
} else {
  stop("mode must be 'fits' or 'boot'")
}
