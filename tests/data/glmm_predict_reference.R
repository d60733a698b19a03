# lme4 reference values for the user-level GLMM results (tests/test_glmm_api.py): predict()
# (link and response scale, re.form = NA, new data with offsets and a new level), fitted(),
# residuals() of every type, and the printed summary().
# Made with lme4 1.1-31 (Debian r-cran-lme4) on R 4.2.2 Patched, on lme4's own cbpp and
# grouseticks (the same data as tests/data/cbpp.csv and grouseticks.csv). Run from the
# repository root:
#   Rscript tests/data/glmm_predict_reference.R        # about 2 s
# Writes tests/data/glmm_predict_reference.json. Numbers have 17 significant digits.
#
# Every model is fitted with glmer's defaults, then polished from that optimum with nloptwrap
# (NLopt BOBYQA) at xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = ftol_rel = 0 and
# tolPwrss = 1e-12, as in glmm_reference.R, so that lme4's stopping rule does not dominate
# the comparison (what remains is lme4's PIRLS tolerance: ~1e-6 relative in the parameters).
#
# Models:
#   cbpp_binomial  cbind(incidence, size - incidence) ~ period + (1 | herd), binomial
#   cbpp_offset    incidence ~ period + offset(log(size)) + (1 | herd), poisson
#   cbpp_offset_sum incidence ~ period + offset(half) + (1 | herd), poisson, offset = half,
#                  half = log(size) / 2: lme4 sums the formula's and the argument's offsets
#                  (the same model as cbpp_offset)
#   cbpp_slope     cbind(incidence, size - incidence) ~ period + (1 + t | herd), binomial,
#                  t = as.numeric(period) / 4 (a correlated random slope); also "ranef":
#                  ranef(m, condVar = TRUE)'s modes and postVar matrices per level
#   grouseticks    TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), poisson
# Fields per model: fixef, theta; summary = capture.output(print(summary(m))) as lines, less
# the Data:, Offset: and Control: blocks (one blank line in their place); and (not for
# grouseticks) eta = predict(m), mu = predict(m, type = "response") (= fitted(m), checked),
# eta_fixed = predict(m, re.form = NA), residuals (deviance, pearson, working, response). With
# "newdata" (columns as strings or numbers): predict(m, newdata, allow.new.levels = TRUE) on
# both scales and predict(m, newdata, re.form = NA). lme4's predict() with newdata evaluates
# the formula's offset() terms on newdata and ignores glmer's offset= argument.
suppressMessages({
  library(lme4)
  library(jsonlite)
})
t_start <- proc.time()[["elapsed"]]
options(width = 80, digits = 7)

jnum <- function(z) structure(sprintf("%.17g", z), class = "json")
jvec <- function(v) lapply(unname(as.numeric(v)), jnum)
jstr <- function(s) I(as.character(s))

data("cbpp", package = "lme4")
data("grouseticks", package = "lme4")
cbpp$half <- log(cbpp$size) / 2
cbpp$t <- as.numeric(cbpp$period) / 4

polish_ctrl <- glmerControl(optimizer = "nloptwrap", tolPwrss = 1e-12, nAGQ0initStep = FALSE,
                            optCtrl = list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 0,
                                           ftol_rel = 0, maxeval = 1e5))
fit <- function(formula, data, family, offset = NULL) {
  args <- list(formula = formula, data = data, family = family)
  if (!is.null(offset)) args$offset <- offset        # glmer evaluates offset= lazily
  first <- do.call(glmer, c(args, list(control = glmerControl(tolPwrss = 1e-12))))
  do.call(glmer, c(args, list(control = polish_ctrl,
                              start = list(theta = getME(first, "theta"), fixef = fixef(first)))))
}

# summary(m) as printed, without the Data:, Offset: and Control: blocks (do.call() puts the
# whole data set in the call)
summary_lines <- function(m) {
  text <- capture.output(print(summary(m)))
  c(text[seq_len(grep("^   Data:", text)[1] - 1L)], "", text[grep("^ +AIC +BIC", text)[1]:length(text)])
}

record <- function(m, newdata = NULL, rows = TRUE) {
  stopifnot(isTRUE(all.equal(fitted(m), predict(m, type = "response"), tolerance = 0)))
  out <- list(
    fixef = list(names = jstr(names(fixef(m))), values = jvec(fixef(m))),
    theta = jvec(getME(m, "theta")),
    summary = jstr(summary_lines(m))
  )
  if (rows) {
    out$eta <- jvec(predict(m))
    out$mu <- jvec(predict(m, type = "response"))
    out$eta_fixed <- jvec(predict(m, re.form = NA))
    out$residuals <- lapply(c(deviance = "deviance", pearson = "pearson", working = "working",
                              response = "response"), function(t) jvec(residuals(m, type = t)))
  }
  if (!is.null(newdata)) {
    out$newdata <- lapply(newdata, function(col) if (is.numeric(col)) jvec(col) else jstr(col))
    out$predict_new_link <- jvec(predict(m, newdata, allow.new.levels = TRUE))
    out$predict_new_response <- jvec(predict(m, newdata, allow.new.levels = TRUE,
                                             type = "response"))
    out$predict_new_fixed <- jvec(predict(m, newdata, re.form = NA))
  }
  out
}

# ranef(m, condVar = TRUE) of the one grouping factor: levels, modes (levels x terms) and the
# postVar covariances, one q x q matrix (row by row) per level
ranef_record <- function(m) {
  r <- ranef(m, condVar = TRUE)[[1]]
  pv <- attr(r, "postVar")
  list(levels = jstr(rownames(r)), terms = jstr(colnames(r)),
       mode = lapply(seq_len(nrow(r)), function(i) jvec(unlist(r[i, ]))),
       condvar = lapply(seq_len(nrow(r)), function(i) jvec(t(pv[, , i]))))
}

# herd 16 is not in cbpp: allow.new.levels gives it no random effect
new_cbpp <- data.frame(herd = c("1", "5", "16", "16", "9"), period = c("1", "2", "3", "4", "4"),
                       size = c(10, 20, 5, 40, 7), stringsAsFactors = FALSE)
new_cbpp$t <- as.numeric(new_cbpp$period) / 4

m_bin <- fit(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)
m_off <- fit(incidence ~ period + offset(log(size)) + (1 | herd), cbpp, poisson)
m_sum <- fit(incidence ~ period + offset(half) + (1 | herd), cbpp, poisson, offset = cbpp$half)
m_slope <- fit(cbind(incidence, size - incidence) ~ period + (1 + t | herd), cbpp, binomial)
m_grouse <- fit(TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION),
                grouseticks, poisson)

out <- list(
  source = paste0("lme4 ", packageVersion("lme4"), " on ", R.version.string,
                  ", made by tests/data/glmm_predict_reference.R"),
  models = list(
    cbpp_binomial = record(m_bin, new_cbpp),
    cbpp_offset = record(m_off, new_cbpp),
    cbpp_offset_sum = record(m_sum),
    cbpp_slope = c(record(m_slope, new_cbpp), list(ranef = ranef_record(m_slope))),
    grouseticks = record(m_grouse, rows = FALSE)
  )
)
write(toJSON(out, auto_unbox = TRUE, json_verbatim = TRUE, pretty = TRUE, null = "null"),
      file.path("tests", "data", "glmm_predict_reference.json"))
cat(sprintf("total %.1f s\n", proc.time()[["elapsed"]] - t_start))
