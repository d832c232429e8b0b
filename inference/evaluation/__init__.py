"""Estimators of log p(x) (importance sampling, AIS, exact, BDMC) and the diagnostics that judge them."""
