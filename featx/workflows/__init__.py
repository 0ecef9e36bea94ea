"""Workflows: the only place that combines evaluation, saved models and reports (classify, compare, predict, hybrid)."""
