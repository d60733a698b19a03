# Exports models' data from R's mlmRev package for the real-models suite
# (python -m benchmarks --suite real).
#
# Usage: Rscript benchmarks/export_mlmrev.R OUT_DIR KEY DATASET FORMULA [KEY DATASET FORMULA ...]
#
# For each model, writes OUT_DIR/KEY.csv with the formula's variables only
# (all.vars), on the rows complete in those variables (lme4's na.omit; jaxmixed
# is given no missing values), and OUT_DIR/KEY.levels.csv (columns column,level)
# with the levels of every factor in mlmRev's order, so that both jaxmixed and
# lme4 read the same factors with the same reference level. Ordered factors
# become unordered (treatment contrasts in both: lme4 would use polynomial
# contrasts, the same column space, so the same REML criterion); levels absent
# from the complete rows are dropped.

suppressPackageStartupMessages(library(mlmRev))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 4 || (length(args) - 1) %% 3 != 0) {
  stop("usage: Rscript export_mlmrev.R OUT_DIR KEY DATASET FORMULA [KEY DATASET FORMULA ...]")
}
out_dir <- args[[1]]
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)

export_one <- function(key, dataset, formula) {
  env <- new.env()
  data(list = dataset, package = "mlmRev", envir = env)
  d <- get(dataset, envir = env)
  vars <- all.vars(as.formula(formula))
  missing <- setdiff(vars, names(d))
  if (length(missing)) stop(sprintf("%s: %s has no column(s) %s", key, dataset, paste(missing, collapse = ", ")))
  d <- d[complete.cases(d[vars]), vars, drop = FALSE]
  is_factor <- vapply(d, is.factor, logical(1))
  for (col in names(d)[is_factor]) d[[col]] <- droplevels(factor(d[[col]], ordered = FALSE))
  lv <- lapply(names(d)[is_factor], function(col) data.frame(column = col, level = levels(d[[col]])))
  lv <- do.call(rbind, c(list(data.frame(column = character(0), level = character(0))), lv))
  # Write to temporary names first: a cache file is complete or absent.
  csv <- file.path(out_dir, paste0(key, ".csv"))
  levels_csv <- file.path(out_dir, paste0(key, ".levels.csv"))
  write.csv(d, paste0(csv, ".tmp"), row.names = FALSE)
  write.csv(lv, paste0(levels_csv, ".tmp"), row.names = FALSE)
  file.rename(paste0(levels_csv, ".tmp"), levels_csv)
  file.rename(paste0(csv, ".tmp"), csv)
  cat(sprintf("%s: %s, %d rows, columns %s\n", key, dataset, nrow(d), paste(vars, collapse = ", ")))
}

for (i in seq(2, length(args), by = 3)) export_one(args[[i]], args[[i + 1]], args[[i + 2]])
