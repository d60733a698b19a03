# Reproduces kr_reference.json: Rscript kr_reference.R (run in tests/data).
# R 4.2.2, lme4 1.1-31, lmerTest 3.1-3, pbkrtest 0.5.2 (Debian r-cran-lme4,
# r-cran-lmertest, r-cran-pbkrtest). Kenward-Roger tables of REML fits:
# lmerTest's summary(m, ddf = "Kenward-Roger") per coefficient, pbkrtest's
# adjusted covariance (vcovAdj), and lmerTest's contest(..., ddf = "Kenward-Roger")
# for multi-row contrasts; with the seconds pbkrtest's vcovAdj takes (one call).
suppressMessages({library(lmerTest); library(pbkrtest); library(jsonlite)})
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5))
rec <- function(m, data_name, formula, contrasts = list()) {
  ct <- summary(m, ddf = "Kenward-Roger")$coefficients
  sat <- summary(m, ddf = "Satterthwaite")$coefficients
  secs <- system.time(va <- pbkrtest::vcovAdj(m))[["elapsed"]]
  tests <- lapply(contrasts, function(L) {
    a <- contest(m, L, ddf = "Kenward-Roger")
    list(L = lapply(seq_len(nrow(L)), function(i) L[i, ]), F = a[["F value"]], NumDF = a$NumDF,
         DenDF = a$DenDF, p = a[["Pr(>F)"]], MeanSq = a[["Mean Sq"]])
  })
  list(data = data_name, formula = formula, nobs = nobs(m), REMLcrit = REMLcrit(m),
       names = rownames(ct), estimate = unname(ct[, "Estimate"]), se = unname(ct[, "Std. Error"]),
       df = unname(ct[, "df"]), t = unname(ct[, "t value"]), p = unname(ct[, "Pr(>|t|)"]),
       satterthwaite_df = unname(sat[, "df"]),
       vcov_adjusted = lapply(seq_len(nrow(va)), function(i) unname(as.matrix(va)[i, ])),
       vcov = lapply(seq_len(nrow(va)), function(i) unname(as.matrix(vcov(m))[i, ])),
       contests = tests, vcovAdj_seconds = secs)
}
fit <- function(f, d) lmer(as.formula(f), d, control = ctrl)
out <- list()
ss <- read.csv("../../jaxmixed/data/sleepstudy.csv"); ss$Subject <- factor(ss$Subject)
f <- "Reaction ~ Days + (Days | Subject)"
out$sleepstudy <- rec(fit(f, ss), "sleepstudy", f)
# Unbalanced: every 7th row left out (rows 1, 8, 15, ... in R's numbering).
ssu <- ss[-seq(1, nrow(ss), by = 7), ]
out$sleepstudy_unbalanced <- rec(fit(f, ssu), "sleepstudy[-seq(1, 180, 7), ]", f)
f <- "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"
out$sleepstudy_unbalanced_uncorrelated <- rec(fit(f, ssu), "sleepstudy[-seq(1, 180, 7), ]", f)
ck <- read.csv("../../jaxmixed/data/cake.csv")
for (v in c("replicate", "recipe", "temperature")) ck[[v]] <- factor(ck[[v]])
f <- "angle ~ recipe * temperature + (1 | recipe:replicate)"
Lr <- matrix(0, 2, 18); Lr[1, 2] <- 1; Lr[2, 3] <- 1
Lt <- matrix(0, 5, 18); for (i in 1:5) Lt[i, 3 + i] <- 1
out$cake <- rec(fit(f, ck), "cake", f, list(recipe_coefficients = Lr, temperature_coefficients = Lt))
nl <- read.csv("../../jaxmixed/data/nlschools.csv"); nl$class <- factor(nl$class); nl$COMB <- factor(nl$COMB)
f <- "lang ~ IQ + SES + COMB + (IQ | class)"
L2 <- matrix(0, 2, 4); L2[1, 2] <- 1; L2[2, 3] <- 1
out$nlschools <- rec(fit(f, nl), "nlschools", f, list(IQ_and_SES = L2))
pn <- read.csv("../../jaxmixed/data/Penicillin.csv"); pn$plate <- factor(pn$plate); pn$sample <- factor(pn$sample)
f <- "diameter ~ 1 + (1 | plate) + (1 | sample)"
out$penicillin <- rec(fit(f, pn), "Penicillin", f)
ie <- read.csv("insteval_first300.csv"); ie <- ie[ie$s <= 120, ]
for (v in c("s", "d", "studage", "service")) ie[[v]] <- factor(ie[[v]])
f <- "y ~ service + studage + (1 | s) + (1 | d)"
L3 <- matrix(0, 3, 5); for (i in 1:3) L3[i, 2 + i] <- 1
out$insteval120_crossed <- rec(fit(f, ie), "insteval_first300.csv, s <= 120", f, list(studage = L3))
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "kr_reference.json")
