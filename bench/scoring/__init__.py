"""Metrics applied to pairs: the batched runner, set metrics per group, the privacy attacks per
group, the content-addressed results store and the torchrun driver.

Imports bench.data (and the shared options and errors), never bench.analysis or bench.flows.
"""
