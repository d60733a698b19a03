# lme4 reference fits of generalized linear mixed models (binomial and Poisson, Laplace and
# adaptive Gauss-Hermite quadrature), for the GLMM tests.
# Source: the datasets bundled with lme4 1.1-31 (cbpp, grouseticks, VerbAgg) and glmer fits
# made with lme4 1.1-31 (Debian r-cran-lme4) on R 4.2.2 Patched. Run from the repository root:
#   Rscript tests/data/glmm_reference.R        # about 15 s
# Writes tests/data/glmm_reference.json and the data it used, as CSV, in tests/data:
# cbpp.csv, grouseticks.csv, VerbAgg.csv.gz (factor columns quoted; grouseticks$cHEIGHT, lme4's
# HEIGHT - mean(HEIGHT), with 17 significant digits).
#
# Every model is fitted twice: first with glmer's default optimizers (bobyqa for the nAGQ = 0
# step, Nelder_Mead for the final stage) and tolPwrss = 1e-12, then polished by refitting from
# that optimum (start = list(theta, fixef), no nAGQ = 0 step) with nloptwrap (NLopt BOBYQA) at
# xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = ftol_rel = 0. The polished fit is recorded;
# the first fit's objective and parameters are kept under "first_fit". lme4's objective is only
# accurate to ~sqrt(tolPwrss) (see conv_obj below); "converged" is the same objective with
# PIRLS run to convergence, minimised from lme4's optimum.
#
# lme4's objective ("-2 logLik") at nAGQ = 1 is the Laplace approximation with every constant of
# the conditional density (binomial: log choose(size, incidence); Poisson: -log y!). At
# nAGQ > 1 lme4 1.1-31 builds it from deviance residuals, so it leaves out the saturated
# model's log-likelihood, sum(log f(y | mu = y)). "loglik_saturated" records that constant and
# "logLik_full" = logLik + loglik_saturated for nAGQ > 1 (= logLik at nAGQ = 1); section
# "agq_constant" checks it against a direct numerical integration.
# Numbers are written with 17 significant digits (exact double round trip).
suppressMessages({
  library(lme4)
  library(jsonlite)
})
t_start <- proc.time()[["elapsed"]]

# ---- JSON helpers: exact numbers, arrays that stay arrays --------------------------------
jnum <- function(z) {
  if (is.null(z) || length(z) == 0 || is.na(z)) return(NULL)
  structure(sprintf("%.17g", z), class = "json")
}
jvec <- function(v) lapply(unname(as.numeric(v)), jnum)        # always a JSON array
jmat <- function(M) lapply(seq_len(nrow(M)), function(i) jvec(M[i, ]))
jstr <- function(s) I(as.character(s))                         # always a JSON array

# ---- data --------------------------------------------------------------------------------
data("cbpp", package = "lme4")
data("grouseticks", package = "lme4")
data("VerbAgg", package = "lme4")
stopifnot(max(abs(grouseticks$cHEIGHT - (grouseticks$HEIGHT - mean(grouseticks$HEIGHT)))) == 0)

write_data <- function(d, file) {
  out <- d
  for (col in names(out)) {
    if (is.factor(out[[col]])) out[[col]] <- as.character(out[[col]])
    else if (is.double(out[[col]]) && any(out[[col]] != round(out[[col]])))
      out[[col]] <- sprintf("%.17g", out[[col]])
  }
  path <- file.path("tests", "data", file)
  con <- if (grepl("\\.gz$", file)) gzfile(path, "w") else file(path, "w")
  write.csv(out, con, row.names = FALSE, quote = which(vapply(d, is.factor, TRUE)))
  close(con)
}
write_data(cbpp, "cbpp.csv")
write_data(grouseticks, "grouseticks.csv")
write_data(VerbAgg, "VerbAgg.csv.gz")

# ---- models ------------------------------------------------------------------------------
f_cbpp <- cbind(incidence, size - incidence) ~ period + (1 | herd)
specs <- list(
  cbpp_laplace = list(formula = f_cbpp, data = cbpp, family = binomial(), nAGQ = 1),
  cbpp_agq2 = list(formula = f_cbpp, data = cbpp, family = binomial(), nAGQ = 2),
  cbpp_agq5 = list(formula = f_cbpp, data = cbpp, family = binomial(), nAGQ = 5),
  cbpp_agq10 = list(formula = f_cbpp, data = cbpp, family = binomial(), nAGQ = 10),
  cbpp_agq25 = list(formula = f_cbpp, data = cbpp, family = binomial(), nAGQ = 25),
  cbpp_probit = list(formula = f_cbpp, data = cbpp, family = binomial(link = "probit"), nAGQ = 1),
  cbpp_cloglog = list(formula = f_cbpp, data = cbpp, family = binomial(link = "cloglog"),
                      nAGQ = 1),
  cbpp_prop_weights = list(formula = incidence / size ~ period + (1 | herd), data = cbpp,
                           family = binomial(), nAGQ = 1, weights = "size"),
  grouseticks_poisson = list(
    formula = TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION),
    data = grouseticks, family = poisson(), nAGQ = 1),
  verbagg_crossed = list(formula = r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item),
                         data = VerbAgg, family = binomial(), nAGQ = 1),
  cbpp_offset_poisson = list(formula = incidence ~ period + offset(log(size)) + (1 | herd),
                             data = cbpp, family = poisson(), nAGQ = 1)
)

ctrl_first <- glmerControl(tolPwrss = 1e-12)
polish_optctrl <- list(xtol_abs = 1e-12, ftol_abs = 1e-14, xtol_rel = 0, ftol_rel = 0,
                       maxeval = 1e5)
ctrl_polish <- glmerControl(optimizer = "nloptwrap", tolPwrss = 1e-12, nAGQ0initStep = FALSE,
                            optCtrl = polish_optctrl)
control_record <- list(
  first = list(optimizer = jstr(c("bobyqa", "Nelder_Mead")), tolPwrss = jnum(1e-12),
               nAGQ0initStep = TRUE, optCtrl = "glmer defaults"),
  polish = list(optimizer = jstr(c("nloptwrap", "nloptwrap")), algorithm = "NLOPT_LN_BOBYQA",
                tolPwrss = jnum(1e-12), nAGQ0initStep = FALSE,
                optCtrl = lapply(polish_optctrl, jnum),
                start = "list(theta = getME(first, 'theta'), fixef = fixef(first))")
)

# glmer with the spec's data/family/weights; warnings and messages are collected, not printed.
fit <- function(spec, ...) {
  msgs <- character(0)
  args <- list(formula = spec$formula, data = spec$data, family = spec$family,
               nAGQ = spec$nAGQ, ...)
  if (!is.null(spec$weights)) args$weights <- spec$data[[spec$weights]]
  m <- withCallingHandlers(
    do.call(glmer, args),
    warning = function(w) {
      msgs <<- c(msgs, conditionMessage(w)); invokeRestart("muffleWarning")
    },
    message = function(w) {
      msgs <<- c(msgs, conditionMessage(w)); invokeRestart("muffleMessage")
    })
  attr(m, "captured") <- msgs
  m
}

# sum(log f(y | mu = y)) with the prior weights, from the family's aic() and deviance residuals
# (aic = -2 loglik; sum of deviance residuals = 2 (loglik_saturated - loglik)).
loglik_saturated <- function(m) {
  fam <- family(m)
  y <- m@resp$y; mu <- m@resp$mu; wt <- m@resp$weights; n <- m@resp$n
  aic <- fam$aic(y, n, mu, wt, sum(fam$dev.resids(y, mu, wt)))
  -0.5 * (aic - sum(fam$dev.resids(y, mu, wt)))
}

# ---- the converged objective -------------------------------------------------------------
# lme4's devfun stops PIRLS when the penalized deviance changes by < tolPwrss (relative), and
# takes log det(L)^2 (ldL2) from the factorisation made with the weights of the iterate before
# the last one. The penalized deviance is flat at the mode but ldL2 is not, so lme4's Laplace
# and AGQ values carry an error of order sqrt(tolPwrss) that depends on where PIRLS started
# (at tolPwrss = 1e-12: ~1e-8 for logit, ~1e-6 for cloglog; it cannot be made smaller, PIRLS
# fails below ~1e-15). conv_obj() continues lme4's own PIRLS iterations (RglmerWrkIter, the
# same update) until u stops changing, refactors L with the weights at the final mu and returns
# ldL2 + sqrL + aic (Laplace, glmResp::Laplace) or lme4's glmerAGQ formula, re-implemented:
# sum(devc0) + ldL2 - 2 sum(log(mult)), with devc0 = u^2 + per-level deviance residual sums and
# knots u + z / diag(L). L uses lme4's working weights w mu.eta^2 / V(mu) (Fisher information;
# = observed information only for canonical links).
conv_obj <- function(devfun, pars, maxit = 500L) {
  v_lme4 <- devfun(pars)
  e <- environment(devfun)
  pp <- e$pp
  resp <- e$resp
  # iterate until u changes by < 1e-13 (relative to max(1, |u|)), or, once below 1e-10, until
  # the change stops shrinking (rounding noise)
  u_old <- pp$u(1)
  step_old <- Inf
  it <- 0L
  repeat {
    it <- it + 1L
    lme4:::RglmerWrkIter(pp, resp, uOnly = TRUE)
    u_new <- pp$u(1)
    step <- max(abs(u_new - u_old)) / max(1, abs(u_new))
    if (step <= 1e-13 || (step <= 1e-10 && step >= step_old)) break
    if (it >= maxit) stop("conv_obj: PIRLS did not converge")
    u_old <- u_new
    step_old <- step
  }
  pp$updateXwts(resp$sqrtWrkWt())
  pp$updateDecomp()
  if (e$nAGQ <= 1L) {
    val <- resp$Laplace(pp$ldL2(), pp$ldRX2(), pp$sqrL(1))
  } else {
    fac <- as.integer(e$fac)
    GQ <- e$GQmat                       # columns z, w, ldnorm (GHrule)
    delu <- pp$delu + 0                 # a copy: pp$delu aliases the C++ vector
    devc <- function() pp$u(1)^2 + as.vector(tapply(resp$devResid(), fac, sum))
    devc0 <- devc()
    sd <- 1 / diag(as(pp$L(), "sparseMatrix"))   # single scalar term: L is diagonal
    mult <- numeric(length(delu))
    for (i in seq_len(nrow(GQ))) {
      if (GQ[i, 1] == 0) {
        mult <- mult + GQ[i, 2]
        next
      }
      pp$setDelu(delu + GQ[i, 1] * sd)
      resp$updateMu(pp$linPred(1))
      mult <- mult + exp(-0.5 * (devc() - devc0) - GQ[i, 3]) * GQ[i, 2] / sqrt(2 * pi)
    }
    pp$setDelu(delu)
    resp$updateMu(pp$linPred(1))
    val <- sum(devc0) + pp$ldL2() - 2 * sum(log(mult))
  }
  structure(val, lme4 = v_lme4, iterations = it)
}

devfun_spec <- function(spec) {
  args <- list(formula = spec$formula, data = spec$data, family = spec$family,
               nAGQ = spec$nAGQ, devFunOnly = TRUE, control = glmerControl(tolPwrss = 1e-12))
  if (!is.null(spec$weights)) args$weights <- spec$data[[spec$weights]]
  do.call(glmer, args)
}

# Minimise the converged objective from lme4's (polished) optimum.
fit_converged <- function(spec, m) {
  devfun <- devfun_spec(spec)
  p_lme4 <- c(getME(m, "theta"), fixef(m))
  lower <- environment(devfun)$lower
  opt <- lme4::nloptwrap(p_lme4, function(p) as.numeric(conv_obj(devfun, p)), lower = lower,
                         upper = rep(Inf, length(lower)), control = polish_optctrl)
  at_lme4 <- conv_obj(devfun, p_lme4)
  at_opt <- conv_obj(devfun, opt$par)
  nth <- length(getME(m, "theta"))
  list(par = opt$par, fval = as.numeric(at_opt), at_lme4 = as.numeric(at_lme4),
       theta = opt$par[seq_len(nth)], fixef = opt$par[-seq_len(nth)], feval = opt$feval,
       message = opt$message, iterations = attr(at_opt, "iterations"))
}

record <- function(key, spec, m, first, conv) {
  fe <- fixef(m)
  V <- as.matrix(vcov(m))
  V_rx <- as.matrix(suppressWarnings(vcov(m, use.hessian = FALSE)))
  th <- getME(m, "theta")
  vc <- as.data.frame(VarCorr(m))
  re <- ranef(m, condVar = TRUE)
  ll <- as.numeric(logLik(m))
  lsat <- loglik_saturated(m)
  msgs <- c(m@optinfo$conv$lme4$messages, attr(m, "captured"))
  out <- list(
    formula = paste(deparse(spec$formula, width.cutoff = 500L), collapse = " "),
    family = family(m)$family,
    link = family(m)$link,
    nAGQ = spec$nAGQ,
    weights = if (is.null(spec$weights)) NULL else spec$weights,
    n = nobs(m),
    fixef = list(names = jstr(names(fe)), values = jvec(fe)),
    se = jvec(sqrt(diag(V))),
    vcov = jmat(V),
    vcov_rx = jmat(V_rx),
    hessian = jmat(m@optinfo$derivs$Hessian),
    theta = list(names = jstr(names(th)), values = jvec(th)),
    varcorr = list(grp = jstr(vc$grp), var1 = jstr(vc$var1),
                   var2 = jstr(ifelse(is.na(vc$var2), "", vc$var2)),
                   vcov = jvec(vc$vcov), sdcor = jvec(vc$sdcor)),
    logLik = jnum(ll),
    minus2logLik = jnum(-2 * ll),
    deviance = jnum(deviance(m)),
    AIC = jnum(AIC(m)),
    BIC = jnum(BIC(m)),
    df = attr(logLik(m), "df"),
    loglik_saturated = jnum(lsat),
    logLik_includes_constants = spec$nAGQ <= 1,
    logLik_full = jnum(if (spec$nAGQ > 1) ll + lsat else ll),
    ranef = lapply(setNames(names(re), names(re)), function(g) {
      r <- re[[g]]
      pv <- attr(r, "postVar")
      list(levels = jstr(rownames(r)), terms = jstr(colnames(r)),
           mode = setNames(lapply(colnames(r), function(cn) jvec(r[[cn]])), colnames(r)),
           condvar = setNames(lapply(seq_len(ncol(r)), function(j) jvec(pv[j, j, ])),
                              colnames(r)))
    }),
    singular = isSingular(m),
    messages = jstr(msgs),
    optimizer_gradient = jvec(m@optinfo$derivs$gradient),
    control = control_record,
    converged = list(
      minus2logLik = jnum(conv$fval),
      logLik = jnum(-conv$fval / 2),
      logLik_full = jnum(-conv$fval / 2 + if (spec$nAGQ > 1) lsat else 0),
      theta = jvec(conv$theta),
      fixef = jvec(conv$fixef),
      minus2logLik_at_lme4_optimum = jnum(conv$at_lme4),
      pirls_iterations = conv$iterations,
      optimizer = paste("nloptwrap (NLOPT_LN_BOBYQA) on conv_obj from the lme4 optimum,",
                        "xtol_abs 1e-12, ftol_abs 1e-14, xtol_rel = ftol_rel = 0"),
      feval = conv$feval),
    first_fit = list(minus2logLik = jnum(-2 * as.numeric(logLik(first))),
                     theta = jvec(getME(first, "theta")), fixef = jvec(fixef(first)),
                     messages = jstr(c(first@optinfo$conv$lme4$messages,
                                       attr(first, "captured"))))
  )
  out
}

models_out <- list()
fits <- list()
convs <- list()
for (key in names(specs)) {
  spec <- specs[[key]]
  t0 <- proc.time()[["elapsed"]]
  first <- fit(spec, control = ctrl_first)
  m <- fit(spec, control = ctrl_polish,
           start = list(theta = getME(first, "theta"), fixef = fixef(first)))
  conv <- fit_converged(spec, m)
  fits[[key]] <- m
  convs[[key]] <- conv
  models_out[[key]] <- record(key, spec, m, first, conv)
  cat(sprintf("%-20s -2logLik %.12f (first fit %.12f; converged %.12f, at lme4 opt %.12f, max |dpar| %.1e)  %5.1f s\n",
              key, -2 * as.numeric(logLik(m)), -2 * as.numeric(logLik(first)), conv$fval,
              conv$at_lme4, max(abs(conv$par - c(getME(m, "theta"), fixef(m)))),
              proc.time()[["elapsed"]] - t0))
}

# ---- Laplace objective at fixed points (cbpp_laplace) ------------------------------------
# devfun <- glmer(..., nAGQ = 1, devFunOnly = TRUE) takes c(theta, beta). "values_lme4": one
# fresh devfun per point (lme4's PIRLS state carries over between calls, so later calls can
# differ by ~1e-8); "values_converged": conv_obj at the same points.
devfun_for <- function(nAGQ) {
  glmer(f_cbpp, cbpp, binomial, nAGQ = nAGQ, devFunOnly = TRUE,
        control = glmerControl(tolPwrss = 1e-12))
}
m_lap <- fits$cbpp_laplace
par_names <- c(names(getME(m_lap, "theta")), names(fixef(m_lap)))
points <- list(
  convs$cbpp_laplace$par,
  c(0.7, -1.4, -1.0, -1.1, -1.6),
  c(0.5, -1.3, -0.9, -1.2, -1.5)
)
values_lme4 <- vapply(points, function(p) devfun_for(1)(p), 0.0)
values_conv <- vapply(points, function(p) as.numeric(conv_obj(devfun_for(1), p)), 0.0)
stopifnot(max(abs(values_lme4 - values_conv)) < 1e-6)
laplace_devfun <- list(
  model = "cbpp_laplace",
  note = paste("devfun <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,",
               "binomial, nAGQ = 1, devFunOnly = TRUE, control = glmerControl(tolPwrss = 1e-12));",
               "values_lme4 = devfun(c(theta, beta)) (a fresh devfun per point), lme4's Laplace",
               "-2 log-likelihood with every constant; values_converged = the same with PIRLS run",
               "to convergence (conv_obj in glmm_reference.R). Point 1 is the converged optimum."),
  parameter_names = jstr(par_names),
  points = lapply(points, jvec),
  values_lme4 = jvec(values_lme4),
  values_converged = jvec(values_conv)
)

# ---- the constant left out at nAGQ > 1 ----------------------------------------------------
# At one parameter point (the converged cbpp_agq25 optimum) evaluate lme4's devfun and
# conv_obj for nAGQ = 1, 2, 5, 10, 25, and the exact marginal log-likelihood by numerical
# integration over each herd's random effect (integrate(), every constant included).
p25 <- convs$cbpp_agq25$par
X <- getME(fits$cbpp_agq25, "X")
eta_fixed <- as.vector(X %*% p25[-1])
exact_loglik <- sum(vapply(levels(cbpp$herd), function(h) {
  i <- which(cbpp$herd == h)
  lik <- function(z) vapply(z, function(zz) exp(sum(dbinom(cbpp$incidence[i], cbpp$size[i],
    plogis(eta_fixed[i] + p25[1] * zz), log = TRUE)) + dnorm(zz, log = TRUE)), 0.0)
  log(integrate(lik, -Inf, Inf, rel.tol = 1e-13, subdivisions = 1000L)$value)
}, 0.0))
lsat_cbpp <- sum(dbinom(cbpp$incidence, cbpp$size, cbpp$incidence / cbpp$size, log = TRUE))
lchoose_cbpp <- sum(lchoose(cbpp$size, cbpp$incidence))
stopifnot(abs(lsat_cbpp - loglik_saturated(fits$cbpp_agq25)) < 1e-10)
qs <- c(1, 2, 5, 10, 25)
ll_q <- -vapply(qs, function(q) devfun_for(q)(p25), 0.0) / 2
ll_q_conv <- -vapply(qs, function(q) as.numeric(conv_obj(devfun_for(q), p25)), 0.0) / 2
add <- ifelse(qs > 1, lsat_cbpp, 0)
stopifnot(abs(ll_q_conv[qs == 25] + lsat_cbpp - exact_loglik) < 1e-8)
agq_constant <- list(
  note = paste(
    "lme4 1.1-31's nAGQ > 1 objective (glmerAGQ) is built from deviance residuals and so",
    "omits the saturated log-likelihood sum(log f(y | mu = y)); for binomial that is",
    "sum(dbinom(incidence, size, incidence / size, log = TRUE)) = sum(lchoose(size, incidence))",
    "+ sum(incidence log(p) + (size - incidence) log(1 - p)) at p = incidence / size,",
    "not sum(lchoose) alone. logLik_full = logLik + loglik_saturated for nAGQ > 1; at nAGQ = 1",
    "(glmResp::Laplace = ldL2 + sqrL + aic) lme4's logLik already has every constant. Check,",
    "at the converged cbpp_agq25 optimum (point): loglik_lme4 = -devfun/2 and",
    "loglik_converged = -conv_obj/2 for nAGQ = 1, 2, 5, 10, 25; the *_full fields add",
    "loglik_saturated for nAGQ > 1; exact_loglik is the marginal log-likelihood by",
    "integrate() (rel.tol 1e-13) over each herd's random effect."),
  model = "cbpp (binomial logit, (1 | herd))",
  parameter_names = jstr(par_names),
  point = jvec(p25),
  loglik_saturated = jnum(lsat_cbpp),
  sum_lchoose = jnum(lchoose_cbpp),
  nAGQ = qs,
  loglik_lme4 = jvec(ll_q),
  loglik_lme4_full = jvec(ll_q + add),
  loglik_converged = jvec(ll_q_conv),
  loglik_converged_full = jvec(ll_q_conv + add),
  exact_loglik = jnum(exact_loglik)
)
cat("agq constant check: nAGQ", qs, "\n  lme4 full", sprintf("%.12f", ll_q + add),
    "\n  conv full", sprintf("%.12f", ll_q_conv + add),
    "\n  exact    ", sprintf("%.12f", exact_loglik),
    "\n  saturated", sprintf("%.10f", lsat_cbpp), "sum lchoose", sprintf("%.10f", lchoose_cbpp),
    "\n")

out <- list(
  source = paste0(
    "Datasets cbpp, grouseticks, VerbAgg as bundled with lme4 ", packageVersion("lme4"),
    " (written to tests/data/cbpp.csv, grouseticks.csv, VerbAgg.csv.gz); glmer fits by lme4 ",
    packageVersion("lme4"), " (Debian r-cran-lme4) on ", R.version.string,
    ", made by tests/data/glmm_reference.R"),
  r_version = R.version.string,
  lme4_version = as.character(packageVersion("lme4")),
  models = models_out,
  laplace_devfun = laplace_devfun,
  agq_constant = agq_constant
)
write(toJSON(out, auto_unbox = TRUE, json_verbatim = TRUE, pretty = TRUE, null = "null"),
      file.path("tests", "data", "glmm_reference.json"))
cat(sprintf("total %.1f s\n", proc.time()[["elapsed"]] - t_start))
