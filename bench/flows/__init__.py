"""One module per command's job, each a short sequence of typed stages from data, scoring and
analysis: `bench run` (evaluate), `bench run --method` (benchmark), `bench score` on folders
(folders), `bench train`, `bench explain`, `bench perf` and the start-up measurement.
"""
