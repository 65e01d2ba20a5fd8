"""Metric adapters: per-pair (PairMetric) and per-set (SetMetric) image metrics."""
