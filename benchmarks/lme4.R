# lme4's side of the benchmarks: fits one model with lmer (REML) and prints one line
# "JSON:{...}" with the times, the estimates and the process's peak memory.
#
# Usage: Rscript benchmarks/lme4.R CSV FORMULA FACTORS [LEVELS MIN_REPEATS MAX_REPEATS BUDGET_S]
#
#   CSV          the data (written by the Python side, round-trip precision)
#   FORMULA      the lme4 formula, e.g. "Reaction ~ Days + (Days | Subject)"
#   FACTORS      comma-separated columns to read as factors ("" for none)
#   LEVELS       "" or a CSV with columns column,level: the factor levels in order
#                (the real-models suite keeps mlmRev's level order this way); factors
#                it does not list get R's default order (sorted)
#   MIN_REPEATS, MAX_REPEATS, BUDGET_S
#                fit until MAX_REPEATS fits, or until MIN_REPEATS once BUDGET_S seconds
#                are spent (default 1, 5, 2: repeat only fast fits, median of up to 5)
#
# fit_s is the median of the fit times; fit_times has every one (the real-models
# suite fits exactly twice and reports the second, lme4's steady state).

suppressPackageStartupMessages(library(lme4))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 3) stop("usage: Rscript lme4.R CSV FORMULA FACTORS [LEVELS MIN MAX BUDGET]")
arg <- function(i, default) if (length(args) >= i && nzchar(args[[i]])) args[[i]] else default
factors <- strsplit(args[[3]], ",", fixed = TRUE)[[1]]
levels_csv <- arg(4, "")
min_repeats <- as.integer(arg(5, "1"))
max_repeats <- as.integer(arg(6, "5"))
budget <- as.numeric(arg(7, "2"))

# Factors are read as text first, so that codes such as "01" stay as written.
classes <- setNames(rep("character", length(factors)), factors)
df <- read.csv(args[[1]], colClasses = classes)
lv <- if (nzchar(levels_csv)) read.csv(levels_csv, colClasses = "character") else NULL
for (col in factors) {
  order <- if (is.null(lv)) character(0) else lv$level[lv$column == col]
  df[[col]] <- if (length(order)) factor(df[[col]], levels = order) else factor(df[[col]])
}
form <- as.formula(args[[2]])

times <- c()
repeat {
  t0 <- proc.time()[["elapsed"]]
  m <- lmer(form, data = df, REML = TRUE)
  times <- c(times, proc.time()[["elapsed"]] - t0)
  if (length(times) >= max_repeats || (length(times) >= min_repeats && sum(times) > budget)) break
}

num <- function(x) paste0("[", paste(ifelse(is.finite(x), sprintf("%.17g", x), "null"), collapse = ","), "]")
str <- function(x) {
  if (length(x) == 0) return("[]")
  paste0("[", paste0("\"", ifelse(is.na(x), "", as.character(x)), "\"", collapse = ","), "]")
}
vc <- as.data.frame(VarCorr(m))
msgs <- m@optinfo$conv$lme4$messages
status <- readLines("/proc/self/status")
hwm <- as.numeric(strsplit(trimws(sub("VmHWM:", "", grep("^VmHWM:", status, value = TRUE))), " ")[[1]][1]) * 1024
cat("JSON:{",
    "\"fit_s\":", sprintf("%.6f", median(times)), ",",
    "\"fit_times\":", num(times), ",",
    "\"n_obs\":", nobs(m), ",",
    "\"objective\":", sprintf("%.17g", REMLcrit(m)), ",",
    "\"fixef_names\":", str(names(fixef(m))), ",",
    "\"fixef\":", num(unname(fixef(m))), ",",
    "\"theta\":", num(unname(getME(m, "theta"))), ",",
    "\"sigma\":", sprintf("%.17g", sigma(m)), ",",
    "\"vc_grp\":", str(vc$grp), ",",
    "\"vc_var1\":", str(vc$var1), ",",
    "\"vc_var2\":", str(vc$var2), ",",
    "\"vc_vcov\":", num(vc$vcov), ",",
    "\"messages\":", str(if (is.null(msgs)) character(0) else msgs), ",",
    "\"peak_rss_bytes\":", sprintf("%.0f", hwm), ",",
    "\"versions\": {\"R\": \"", R.version.string, "\", \"lme4\": \"", as.character(packageVersion("lme4")), "\"}",
    "}\n", sep = "")
