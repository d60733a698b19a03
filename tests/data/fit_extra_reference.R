# Reproduces extra_reference.json: Rscript fit_extra_reference.R (run in tests/data).
# R 4.2.2 with lme4 1.1-31 (Debian r-cran-lme4). Tight optimiser settings, so that
# lme4's own stopping tolerance does not dominate the comparison.
suppressMessages({library(lme4); library(jsonlite)})
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5))
rec <- function(m, data_name, formula) {
  vc <- as.data.frame(VarCorr(m))
  list(data = data_name, formula = formula, REML = isREML(m), nobs = nobs(m),
       objective = if (isREML(m)) REMLcrit(m) else deviance(m),
       fixef = as.list(fixef(m)), se = as.list(sqrt(diag(as.matrix(vcov(m))))),
       sigma = sigma(m), theta = as.list(getME(m, "theta")),
       varcorr = lapply(seq_len(nrow(vc)), function(i) list(grp = vc$grp[i], var1 = vc$var1[i],
                 var2 = vc$var2[i], vcov = vc$vcov[i], sdcor = vc$sdcor[i])))
}
out <- list()
nl <- read.csv("../../jaxmixed/data/nlschools.csv"); nl$class <- factor(nl$class)
f1 <- "lang ~ IQ + SES + (IQ | class)"
out$nlschools_slopes_reml <- rec(lmer(as.formula(f1), nl, control = ctrl), "nlschools", f1)
out$nlschools_slopes_ml <- rec(lmer(as.formula(f1), nl, REML = FALSE, control = ctrl), "nlschools", f1)
ie <- read.csv("insteval_first300.csv")
for (v in c("s", "d", "dept", "service")) ie[[v]] <- factor(ie[[v]])
f2 <- "y ~ 1 + service + (1 | s) + (1 | d) + (service | dept)"
out$insteval300_dense_slopes_reml <- rec(lmer(as.formula(f2), ie, control = ctrl), "insteval_first300", f2)
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "extra_reference.json")

# Term order and names as lme4 gives them: a factor with two terms and fewer
# levels than another (lme4 reorders by rev(order(nl)), reversing ties), and
# an uncorrelated bar on a categorical predictor.
ss <- read.csv("../../jaxmixed/data/sleepstudy.csv"); ss$Subject <- factor(ss$Subject)
ss$DaysF <- factor(ss$Days); ss$w <- (seq_len(nrow(ss)) - 1) %% 7 - 3
ss$ph <- ifelse(ss$Days < 5, "a", "b")
f3 <- "Reaction ~ Days + (1 | DaysF) + (1 | Subject) + (0 + w | DaysF)"
out$sleepstudy_term_order_reml <- rec(lmer(as.formula(f3), ss, control = ctrl), "sleepstudy", f3)
f4 <- "Reaction ~ Days + (ph || Subject)"
out$sleepstudy_uncorr_factor_reml <- rec(lmer(as.formula(f4), ss, control = ctrl), "sleepstudy", f4)
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "extra_reference.json")
