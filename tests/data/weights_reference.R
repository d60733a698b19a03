# lme4's fits of sleepstudy with prior weights, for tests/test_api.py::test_prior_weights_match_lme4.
# R 4.2.2, lme4 1.1-31 (Debian). Run: Rscript tests/data/weights_reference.R
suppressMessages(library(lme4))
d <- sleepstudy
d$w <- 1 + (d$Days %% 3) * 0.5
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
for (reml in c(TRUE, FALSE)) {
  m <- lmer(Reaction ~ Days + (Days | Subject), d, weights = w, REML = reml, control = ctrl)
  crit <- if (reml) REMLcrit(m) else deviance(m)
  cat(sprintf("REML=%s criterion %.10f theta %s fixef %s sigma %.10f\n", reml, crit,
              paste(sprintf("%.8f", getME(m, "theta")), collapse = " "),
              paste(sprintf("%.8f", fixef(m)), collapse = " "), sigma(m)))
}
