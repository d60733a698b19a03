# lme4/lmerTest/pbkrtest's side of benchmarks/inference_benchmark.py: fits one model
# (REML, lmerTest's lmer) and times one inference call, whole call against whole call.
#
# Usage: Rscript benchmarks/inference.R CSV LEVELS FORMULA OP REPEATS BUDGET_S
#
#   CSV, LEVELS  the data and its factor levels (column,level; "" for R's default order)
#   OP           satterthwaite: summary(as_lmerModLmerTest(m))   (lmerTest, Satterthwaite)
#                kr:            summary(mt, ddf = "Kenward-Roger")  (pbkrtest underneath)
#                anova3:        anova(as_lmerModLmerTest(m), type = 3)  (Satterthwaite)
#                profile:       confint(m, method = "profile", oldNames = FALSE)
#
# m is lme4's fit. lmerTest computes the Hessian and Jacobians that Satterthwaite's df
# need when it fits (its lmer is lme4's plus as_lmerModLmerTest), so its summary and
# anova alone take milliseconds: the timed call includes that conversion, which is
# where lmerTest's work is. mt (converted before timing) serves the KR summary.
#   REPEATS      timed calls after the first (fewer when BUDGET_S seconds are spent)
#
# Prints one line "JSON:{...}": first_s (the first call), times (the repeats).

suppressPackageStartupMessages(library(lmerTest))
args <- commandArgs(trailingOnly = TRUE)
levels_csv <- args[[2]]
lv <- if (nzchar(levels_csv)) read.csv(levels_csv, colClasses = "character") else NULL
factors <- if (is.null(lv)) strsplit(Sys.getenv("FACTORS"), ",", fixed = TRUE)[[1]] else unique(lv$column)
df <- read.csv(args[[1]], colClasses = setNames(rep("character", length(factors)), factors))
for (col in factors) {
  order <- if (is.null(lv)) character(0) else lv$level[lv$column == col]
  df[[col]] <- if (length(order)) factor(df[[col]], levels = order) else factor(df[[col]])
}
m <- lme4::lmer(as.formula(args[[3]]), data = df, REML = TRUE)
mt <- as_lmerModLmerTest(m)
op <- switch(args[[4]],
  satterthwaite = function() summary(as_lmerModLmerTest(m)),
  kr = function() summary(mt, ddf = "Kenward-Roger"),
  anova3 = function() anova(as_lmerModLmerTest(m), type = 3),
  profile = function() confint(m, method = "profile", oldNames = FALSE),
  stop("unknown op ", args[[4]]))
elapsed <- function() { t0 <- proc.time()[["elapsed"]]; op(); proc.time()[["elapsed"]] - t0 }
first <- elapsed()
times <- c()
while (length(times) < as.integer(args[[5]]) && sum(times) + first < as.numeric(args[[6]])) times <- c(times, elapsed())
cat("JSON:{\"first_s\":", sprintf("%.6f", first), ",\"times\":[", paste(sprintf("%.6f", times), collapse = ","), "]}\n", sep = "")
