# lmerTest's type III and type I anova with Kenward-Roger's df, for tests/test_kenward_roger.py.
# R 4.2.2, lme4 1.1-31, lmerTest 3.1-3, pbkrtest 0.5-2 (Debian). Run from the repository root:
#   Rscript tests/data/kr_anova_reference.R
# Writes tests/data/kr_anova_reference.json: per model and type, the table's rows (terms)
# and columns (Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F)).
suppressMessages({library(lmerTest); library(jsonlite)})
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
rd <- function(name, factors) {
  d <- read.csv(file.path("jaxmixed", "data", paste0(name, ".csv")))
  for (col in factors) d[[col]] <- factor(d[[col]])
  d
}
rows <- function(tab) {
  tab <- as.data.frame(tab)
  list(terms = I(rownames(tab)), columns = lapply(as.list(tab), function(x) I(unname(x))))
}
models <- list(
  cake = list(rd("cake", c("replicate", "recipe", "temperature")), angle ~ recipe * temperature + (1 | recipe:replicate)),
  nlschools = list(rd("nlschools", c("class", "COMB")), lang ~ IQ * COMB + I(IQ^2) + (1 | class)))
out <- lapply(models, function(m) {
  fit <- lmer(m[[2]], m[[1]], control = ctrl)
  list(formula = deparse(m[[2]]), type3 = rows(anova(fit, type = 3, ddf = "Kenward-Roger")),
       type1 = rows(anova(fit, type = 1, ddf = "Kenward-Roger")))
})
write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/data/kr_anova_reference.json")
