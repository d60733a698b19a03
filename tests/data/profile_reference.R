# Reproduces profile_reference.json: Rscript profile_reference.R (run in tests/data).
# R 4.2.2, lme4 1.1-31 (Debian r-cran-lme4). lme4's profile likelihood intervals,
# confint(profile(m, signames = FALSE, delta = ...)), which is what
# confint(m, method = "profile", oldNames = FALSE) computes with a finer grid.
# Settings: the models are fitted with lme4's defaults (REML, nloptwrap); profile()
# refits by ML (devfun2 calls refitML) and profiles everything on the ML deviance.
# lme4's default step, delta = cutoff / 8 with cutoff = sqrt(qchisq(1 - alphamax,
# nptot)) (alphamax = 0.01, nptot = number of variance and fixed parameters), spaces
# the points about 0.5 apart in zeta, so that the interpolating spline, not the
# profile, decides the third digit; here delta = cutoff / 48 (and maxpts = 400),
# i.e. points about 0.08 apart in zeta. The profiles' optimiser is the fit's
# (nloptwrap, lme4's defaults): minqa's bobyqa needs two or more free parameters and
# fails on the sigma profile of a one-variance model (Dyestuff2).
# Recorded per model: the interval table (level 0.95) and, for one variance
# parameter and one fixed effect, every point of lme4's trace (parameter value, zeta).
suppressMessages({library(lme4); library(jsonlite)})

num <- function(v) lapply(unname(v), function(z)
  if (is.na(z)) NA else structure(sprintf("%.17g", z), class = "json"))

rec <- function(m, data_name, formula, trace_pars) {
  nptot <- length(getME(m, "theta")) + 1 + length(fixef(m))
  cutoff <- sqrt(qchisq(1 - 0.01, nptot))
  delta <- cutoff / 48
  pr <- profile(m, signames = FALSE, delta = delta, maxpts = 400)
  ci <- confint(pr, level = 0.95)
  traces <- list()
  for (p in trace_pars) {
    d <- pr[pr$.par == p, ]
    traces[[p]] <- list(value = num(d[[p]]), zeta = num(d$.zeta))
  }
  list(data = data_name, formula = formula, REML = isREML(m), nobs = nobs(m),
       settings = list(alphamax = 0.01, delta = delta, cutoff = cutoff, maxpts = 400,
                       optimizer = "nloptwrap", level = 0.95),
       ml_deviance = deviance(refitML(m)),
       names = rownames(ci), lower = num(ci[, 1]), upper = num(ci[, 2]),
       columns = colnames(ci), traces = traces)
}

rd <- function(name) read.csv(file.path("../../jaxmixed/data", paste0(name, ".csv")))
out <- list()
ss <- rd("sleepstudy"); ss$Subject <- factor(ss$Subject)
f <- "Reaction ~ Days + (Days | Subject)"
out$sleepstudy <- rec(lmer(as.formula(f), ss), "sleepstudy", f,
                      c("sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject", "Days"))
pe <- rd("Penicillin"); pe$plate <- factor(pe$plate); pe$sample <- factor(pe$sample)
f <- "diameter ~ 1 + (1 | plate) + (1 | sample)"
out$Penicillin <- rec(lmer(as.formula(f), pe), "Penicillin", f, c("sd_(Intercept)|plate"))
pa <- rd("Pastes"); pa$batch <- factor(pa$batch); pa$cask <- factor(pa$cask)
f <- "strength ~ 1 + (1 | batch/cask)"
out$Pastes <- rec(lmer(as.formula(f), pa), "Pastes", f, c("sd_(Intercept)|batch"))
d2 <- rd("Dyestuff2"); d2$Batch <- factor(d2$Batch)
f <- "Yield ~ 1 + (1 | Batch)"
out$Dyestuff2 <- rec(lmer(as.formula(f), d2), "Dyestuff2", f, c("sd_(Intercept)|Batch", "sigma"))
nl <- rd("nlschools"); nl$class <- factor(nl$class)
f <- "lang ~ IQ + (1 | class)"
out$nlschools <- rec(lmer(as.formula(f), nl), "nlschools", f, c("sd_(Intercept)|class"))
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "profile_reference.json")
