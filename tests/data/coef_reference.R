# lme4's coef() of fitted models (fixed effects plus each level's conditional modes), for
# tests/test_results.py. R 4.2.2, lme4 1.1-31 (Debian r-cran-lme4). Run from the repository root:
#   Rscript tests/data/coef_reference.R
# Writes tests/data/coef_reference.json: per model, its formula and, per grouping factor,
# coef()'s row names, column names and values (rows). The data are the package's CSVs
# (jaxmixed/data) with the factor conversions of jaxmixed.load_dataset, and cbpp from
# tests/data/cbpp.csv. The linear models are fitted with lme4's defaults, the GLMM polished
# (below): coef() only adds the
# modes to the fixed effects, so the test compares it with jaxmixed's own fixef and ranef
# through the same rule (columns in random effects but not fixed effects come first, as 0
# plus the modes) as well as with these values at the fit's tolerance.
suppressMessages({
  library(lme4)
  library(jsonlite)
})
read_dataset <- function(name, factors) {
  d <- read.csv(file.path("jaxmixed", "data", paste0(name, ".csv")))
  for (col in factors) d[[col]] <- factor(d[[col]])
  d
}
sleep <- read_dataset("sleepstudy", "Subject")
pen <- read_dataset("Penicillin", c("plate", "sample"))
cbpp <- read.csv(file.path("tests", "data", "cbpp.csv"))
cbpp$herd <- factor(cbpp$herd)
cbpp$period <- factor(cbpp$period)
# glmer's default stops early (its PIRLS at 1e-7 relative): refitted from its optimum with
# tolPwrss = 1e-12 and NLopt's BOBYQA at xtol_abs = 1e-12, as glmm_reference.R polishes.
polished_glmer <- function(formula, data) {
  ctrl <- glmerControl(tolPwrss = 1e-12)
  first <- glmer(formula, data = data, family = binomial, control = ctrl)
  opt <- list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 0, ftol_rel = 0, maxeval = 1e5)
  glmer(formula, data = data, family = binomial,
        start = list(theta = getME(first, "theta"), fixef = fixef(first)),
        control = glmerControl(optimizer = "nloptwrap", tolPwrss = 1e-12, nAGQ0initStep = FALSE,
                               optCtrl = opt))
}
models <- list(
  sleep_slopes = lmer(Reaction ~ Days + (Days | Subject), sleep),
  sleep_no_fixed_slope = lmer(Reaction ~ 1 + (Days | Subject), sleep),
  penicillin = lmer(diameter ~ 1 + (1 | plate) + (1 | sample), pen),
  cbpp = polished_glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp)
)
out <- list()
for (key in names(models)) {
  m <- models[[key]]
  cf <- coef(m)
  out[[key]] <- list(
    formula = paste(deparse(formula(m)), collapse = " "),
    factors = lapply(cf, function(tab) list(
      rows = I(rownames(tab)), columns = I(colnames(tab)),
      values = lapply(seq_len(nrow(tab)), function(i) I(unname(as.numeric(tab[i, ]))))
    ))
  )
}
write_json(out, file.path("tests", "data", "coef_reference.json"), digits = NA, auto_unbox = TRUE, pretty = TRUE)
