"""How many images one forward pass of a feature metric takes on a CPU, measured on the run.

On a CPU the best forward-pass size depends on the machine: its caches and vector units decide
when a batch's activations stop fitting. Two 2-core AMD EPYC machines of this project disagreed:
on one the Inception network cost 50 ms per image at 4 images and 76 ms at 32; on another (AVX2,
no AVX-512) 175 ms at 4 and 143 ms at 16. The fixed size of 4 tuned on the first machine cost
the second about 20% of the Inception time.

So each feature metric of a run gets a `ChunkSizer`: its first forward passes try each size in
`CANDIDATES` twice on the run's own images (the first pass of a new size pays for its kernels,
so only the second is timed), then every later pass uses the fastest. The trials are real work
whose features are kept, so tuning costs only the slower sizes' extra time on a few passes. A
GPU takes the whole batch in one pass. Values do not depend on the size (the runner's
batch-size invariance tests hold for every size).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

#: Images per forward pass tried on a CPU. Every size that won on one of this project's machines
#: (A: 4; B: 16; C, AVX-512: 4 or 8 by network); 2 and 32 never did, and trying them cost a
#: run of PerceptAnon HA2 and the Inception distance 10% on machine C (18.1 s -> 16.3 s).
CANDIDATES = (4, 8, 16)
#: Passes of one size before it counts: a warm-up, then the timed one.
_PASSES_PER_CANDIDATE = 2

Result = TypeVar("Result")


@dataclass
class ChunkSizer:
    """The forward-pass size of one metric on a CPU: trials first, then the fastest size."""

    #: size -> passes of exactly that many images so far, and the per-image seconds of the timed ones.
    passes: dict[int, int] = field(default_factory=dict)
    timed: dict[int, float] = field(default_factory=dict)
    chosen: int | None = None

    def next_size(self) -> int:
        if self.chosen is not None:
            return self.chosen
        for size in CANDIDATES:
            if self.passes.get(size, 0) < _PASSES_PER_CANDIDATE:
                return size
        self.chosen = min(self.timed, key=self.timed.get)
        return self.chosen

    def record(self, size: int, images: int, seconds: float) -> None:
        """One pass of `images` images asked as `size`; a short last pass of a batch says nothing of its size."""
        if self.chosen is not None or images != size:
            return
        self.passes[size] = self.passes.get(size, 0) + 1
        if self.passes[size] == _PASSES_PER_CANDIDATE:
            self.timed[size] = seconds / images

    def encode(self, images: torch.Tensor, features: Callable[[torch.Tensor], Any],
               then: Callable[[Any, slice], Result] | None = None) -> list[Result]:
        """`features(part)` over `images` a forward pass at a time, in order, each result passed
        with the part's positions to `then` where given. Only `features` is timed: what a
        caller does with them (a comparison with the originals' features, or none) would make
        passes of one metric incomparable."""
        if images.device.type != "cpu":
            found = features(images)
            return [found if then is None else then(found, slice(0, len(images)))]
        results = []
        for part, span in self.parts(images):
            start = time.perf_counter()
            found = features(part)
            self.record(span.stop - span.start, len(part), time.perf_counter() - start)
            results.append(found if then is None else then(found, span))
        return results

    def parts(self, images: torch.Tensor) -> Iterator[tuple[torch.Tensor, slice]]:
        start = 0
        while start < len(images):
            span = slice(start, start + self.next_size())
            yield images[span], span
            start = span.stop
