# lme4's likelihood-ratio tests of nested GLMMs (anova of glmer fits), for tests/test_glmm_api.py.
# R 4.2.2, lme4 1.1-31 (Debian r-cran-lme4), on lme4's cbpp and grouseticks (the same data as
# tests/data/cbpp.csv and grouseticks.csv, written by glmm_reference.R). Run from the
# repository root:
#   Rscript tests/data/glmm_anova_reference.R      # a few seconds
# Writes tests/data/glmm_anova_reference.json: per comparison, the two formulas and the
# family, and anova(small, big)'s columns (npar, AIC, BIC, logLik, deviance, Chisq, Df,
# Pr(>Chisq)). Each model is fitted with tolPwrss = 1e-12 and then polished from that optimum
# with NLopt's BOBYQA at xtol_abs = 1e-12 (as glmm_reference.R does), so that its logLik is
# the optimum's to about 1e-8.
suppressMessages({
  library(lme4)
  library(jsonlite)
})
data("cbpp", package = "lme4")
data("grouseticks", package = "lme4")

polish_optctrl <- list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 0, ftol_rel = 0, maxeval = 1e5)
fit <- function(formula, data, family) {
  first <- glmer(formula, data = data, family = family, control = glmerControl(tolPwrss = 1e-12))
  glmer(formula, data = data, family = family,
        start = list(theta = getME(first, "theta"), fixef = fixef(first)),
        control = glmerControl(optimizer = "nloptwrap", tolPwrss = 1e-12, nAGQ0initStep = FALSE,
                               optCtrl = polish_optctrl))
}

comparisons <- list(
  cbpp_period = list(
    small = cbind(incidence, size - incidence) ~ 1 + (1 | herd),
    big = cbind(incidence, size - incidence) ~ period + (1 | herd),
    data = cbpp, family = binomial()),
  grouseticks_location = list(
    small = TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX),
    big = TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION),
    data = grouseticks, family = poisson())
)

out <- list()
for (key in names(comparisons)) {
  spec <- comparisons[[key]]
  m0 <- fit(spec$small, spec$data, spec$family)
  m1 <- fit(spec$big, spec$data, spec$family)
  tab <- as.data.frame(anova(m0, m1))
  out[[key]] <- list(
    small = paste(deparse(spec$small), collapse = " "),
    big = paste(deparse(spec$big), collapse = " "),
    family = spec$family$family,
    columns = lapply(as.list(tab), function(x) I(unname(x)))
  )
}
write_json(out, file.path("tests", "data", "glmm_anova_reference.json"), digits = NA, auto_unbox = TRUE,
           pretty = TRUE, na = "null")
