# lmerTest's F tests of fixed-effect terms and lme4's drop1, for tests/test_terms_anova.py.
# R 4.2.2, lme4 1.1-31, lmerTest 3.1-3 (Debian). Run from the repository root:
#   Rscript tests/data/anova_reference.R
# Writes tests/data/anova_reference.json. Per model: fixef (names in lme4's order, values),
# anova_type3 and anova_type1 (lmerTest's anova(m, type = ...), Satterthwaite df) and drop1
# (lme4's drop1(m, test = "Chisq"): reduced models refitted, AIC and LRT by ML).
suppressMessages({
  library(lmerTest)
  library(jsonlite)
})

# The package's CSVs with the factor conversions of jaxmixed.load_dataset: the factor columns
# as factor() of what read.csv reads (integer codes sort numerically); cake's temperature a
# plain (unordered) factor.
read_dataset <- function(name, factors) {
  d <- read.csv(file.path("jaxmixed", "data", paste0(name, ".csv")))
  for (col in factors) d[[col]] <- factor(d[[col]])
  d
}

ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))

as_rows <- function(tab) {
  tab <- as.data.frame(tab)
  # I(): vectors of length 1 stay JSON arrays.
  list(terms = I(rownames(tab)), columns = lapply(as.list(tab), function(x) I(unname(x))))
}

models <- list(
  cake = list(
    data = read_dataset("cake", c("replicate", "recipe", "temperature")),
    formula = angle ~ recipe * temperature + (1 | recipe:replicate)
  ),
  nlschools = list(
    data = read_dataset("nlschools", c("class", "COMB")),
    formula = lang ~ IQ * COMB + I(IQ^2) + (1 | class)
  ),
  sleepstudy = list(
    data = read_dataset("sleepstudy", c("Subject")),
    formula = Reaction ~ Days + (Days | Subject)
  )
)

out <- list()
for (key in names(models)) {
  spec <- models[[key]]
  d <- spec$data
  m <- lmerTest::lmer(spec$formula, data = d, REML = TRUE, control = ctrl)
  out[[key]] <- list(
    formula = paste(deparse(spec$formula), collapse = " "),
    reml = TRUE,
    fixef = list(names = I(names(fixef(m))), values = I(unname(fixef(m)))),
    anova_type3 = as_rows(anova(m, type = 3, ddf = "Satterthwaite")),
    anova_type1 = as_rows(anova(m, type = 1, ddf = "Satterthwaite")),
    drop1 = as_rows(drop1(as(m, "lmerMod"), test = "Chisq"))
  )
}
write_json(out, file.path("tests", "data", "anova_reference.json"), digits = NA, auto_unbox = TRUE,
           pretty = TRUE, na = "null")
