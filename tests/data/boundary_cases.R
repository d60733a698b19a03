# Reproduces boundary_lme4.json: Rscript boundary_cases.R (run in tests/data),
# after make_boundary_cases.py has written boundary_cases.csv.gz.
# R 4.2.2, lme4 1.1-31 (Debian r-cran-lme4). Every (design, model, seed) is fitted
# by REML and by ML with a tight bobyqa tolerance, so that lme4's stopping rule
# does not decide whether a variance reaches 0. lme4 also sets parameters within
# boundary.tol (1e-5) of 0 to 0 when that lowers the objective.
# objective: REML criterion (REMLcrit) for REML fits, deviance for ML fits.
# singular: isSingular(m) with its default tol = 1e-4.
# Numbers are written with 17 significant digits (exact double round trip).
suppressMessages({library(lme4); library(jsonlite)})
ctrl <- lmerControl(optimizer = "bobyqa",
                    optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
models <- list(slope = c("y ~ x + (x | g)", "y ~ x + (x || g)"),
               intercept = "y ~ x + (1 | g)",
               crossed = "y ~ x + (1 | g) + (1 | h)")

num <- function(v) {  # named numeric vector -> list of exact JSON numbers
  out <- lapply(unname(v), function(z) structure(sprintf("%.17g", z), class = "json"))
  names(out) <- names(v)
  out
}

d_all <- read.csv(gzfile("boundary_cases.csv.gz"), colClasses = c(
  design = "character", seed = "integer", y = "numeric", x = "numeric",
  g = "character", h = "character"))
recs <- list()
for (design in names(models)) {
  for (seed in sort(unique(d_all$seed[d_all$design == design]))) {
    d <- d_all[d_all$design == design & d_all$seed == seed, ]
    d$g <- factor(d$g)
    d$h <- factor(d$h)
    for (form in models[[design]]) {
      for (reml in c(TRUE, FALSE)) {
        msgs <- character(0)
        m <- withCallingHandlers(
          lmer(as.formula(form), d, REML = reml, control = ctrl),
          warning = function(w) {
            msgs <<- c(msgs, conditionMessage(w)); invokeRestart("muffleWarning")
          },
          message = function(w) {
            msgs <<- c(msgs, conditionMessage(w)); invokeRestart("muffleMessage")
          })
        msgs <- c(msgs, m@optinfo$conv$lme4$messages, m@optinfo$warnings)
        recs[[length(recs) + 1]] <- list(
          design = design, model = form, seed = seed, reml = reml,
          objective = num(if (reml) REMLcrit(m) else deviance(m))[[1]],
          theta = num(getME(m, "theta")),
          singular = isSingular(m),
          fixef = num(fixef(m)),
          sigma = num(sigma(m))[[1]],
          messages = I(unique(trimws(as.character(unlist(msgs))))))
      }
    }
  }
}
writeLines(toJSON(recs, auto_unbox = TRUE, json_verbatim = TRUE, pretty = 1),
           "boundary_lme4.json")
