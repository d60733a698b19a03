# lme4's linear mixed models with offsets, for tests/test_offsets.py.
# Made with lme4 1.1-31 (Debian r-cran-lme4) on R 4.2.2 Patched, on the package's sleepstudy
# (jaxmixed/data/sleepstudy.csv, Subject a factor). Run from the repository root:
#   Rscript tests/data/offset_reference.R        # about 2 s
# Writes tests/data/offset_reference.json. Numbers have 17 significant digits. Every model is
# fitted with bobyqa at rhoend = 1e-12 (maxfun 1e5), as tests/lme4_r.py fits, so that lme4's
# stopping rule does not dominate the comparison.
#
# Columns made here: o = 20 * sqrt(Days) (an offset that is not linear in Days, so that it is
# not absorbed by the Days coefficient); o_na = o with rows 3 and 50 set to NA.
# Models (key: formula, offset= argument, REML):
#   formula_reml, formula_ml  Reaction ~ Days + (Days | Subject) + offset(2 * Days)
#   argument_reml, argument_ml  Reaction ~ Days + (Days | Subject), offset = o
#   sum_reml  Reaction ~ Days + offset(log(Days + 1)) + (Days | Subject) + offset(Days / 2),
#             offset = o: lmer sums every offset() term and the argument
#   na_drop_reml  Reaction ~ Days + (Days | Subject) + offset(o_na): na.omit (lme4's default)
#             drops the two rows; na.fail would stop ("missing values in object")
# Fields per model: formula, offset_argument (the column's name, or null), reml, nobs, fixef
# (names, values), theta, sigma, objective (REMLcrit for REML fits, deviance for ML fits),
# logLik, AIC, offset = getME(m, "offset") (the summed offset of the fitted rows), fitted =
# fitted(m) (X beta + Z b + offset), fitted_fixed = predict(m, re.form = NA) (X beta +
# offset: lme4 keeps the offset), residuals = residuals(m) (response minus fitted); and, but
# for na_drop_reml, on "newdata" (rows 1, 15, 33 and 100 of sleepstudy with the last one's
# Subject set to the new level "999"): predict_new = predict(m, newdata, allow.new.levels =
# TRUE), predict_new_fixed = predict(m, newdata, re.form = NA), and newdata_argument = the
# argument's column on newdata. lme4's predict() evaluates the formula's offset() terms on
# newdata but leaves out the offset= argument; jaxmixed evaluates an argument given as a
# column name too, so its predictions of the argument models are lme4's plus newdata_argument.
suppressMessages({
  library(lme4)
  library(jsonlite)
})
t_start <- proc.time()[["elapsed"]]

jnum <- function(z) structure(sprintf("%.17g", z), class = "json")
jvec <- function(v) lapply(unname(as.numeric(v)), jnum)
jstr <- function(s) I(as.character(s))

d <- read.csv(file.path("jaxmixed", "data", "sleepstudy.csv"))
d$Subject <- factor(d$Subject)
d$o <- 20 * sqrt(d$Days)
d$o_na <- d$o
d$o_na[c(3, 50)] <- NA
newdata <- d[c(1, 15, 33, 100), c("Reaction", "Days", "Subject", "o")]
newdata$Subject <- as.character(newdata$Subject)
newdata$Subject[4] <- "999"
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))

fit <- function(formula, reml, argument = NULL) {
  args <- list(formula = as.formula(formula), data = d, REML = reml, control = ctrl)
  if (!is.null(argument)) args$offset <- d[[argument]]
  m <- do.call(lmer, args)
  stopifnot(isTRUE(all.equal(fitted(m), predict(m), tolerance = 0)))
  out <- list(
    formula = formula, offset_argument = argument, reml = reml, nobs = nobs(m),
    fixef = list(names = jstr(names(fixef(m))), values = jvec(fixef(m))),
    theta = jvec(getME(m, "theta")), sigma = jnum(sigma(m)),
    objective = jnum(if (reml) REMLcrit(m) else deviance(m)),
    logLik = jnum(as.numeric(logLik(m))), AIC = jnum(AIC(m)),
    offset = jvec(getME(m, "offset")), fitted = jvec(fitted(m)),
    fitted_fixed = jvec(predict(m, re.form = NA)), residuals = jvec(residuals(m))
  )
  if (!anyNA(d[all.vars(as.formula(formula))])) {
    out$predict_new <- jvec(predict(m, newdata, allow.new.levels = TRUE))
    out$predict_new_fixed <- jvec(predict(m, newdata, re.form = NA))
    out$newdata_argument <- if (is.null(argument)) NULL else jvec(newdata[[argument]])
  }
  out
}

slopes <- "Reaction ~ Days + (Days | Subject)"
summed <- "Reaction ~ Days + offset(log(Days + 1)) + (Days | Subject) + offset(Days / 2)"
out <- list(
  source = paste0("lme4 ", packageVersion("lme4"), " on ", R.version.string,
                  ", made by tests/data/offset_reference.R"),
  newdata = list(rows = jvec(c(1, 15, 33, 100)), Days = jvec(newdata$Days),
                 Subject = jstr(newdata$Subject), o = jvec(newdata$o)),
  models = list(
    formula_reml = fit("Reaction ~ Days + (Days | Subject) + offset(2 * Days)", TRUE),
    formula_ml = fit("Reaction ~ Days + (Days | Subject) + offset(2 * Days)", FALSE),
    argument_reml = fit(slopes, TRUE, "o"),
    argument_ml = fit(slopes, FALSE, "o"),
    sum_reml = fit(summed, TRUE, "o"),
    na_drop_reml = fit("Reaction ~ Days + (Days | Subject) + offset(o_na)", TRUE)
  )
)
write(toJSON(out, auto_unbox = TRUE, json_verbatim = TRUE, pretty = TRUE, null = "null"),
      file.path("tests", "data", "offset_reference.json"))
cat(sprintf("total %.1f s\n", proc.time()[["elapsed"]] - t_start))
