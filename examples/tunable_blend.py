"""A tunable anonymizer for the trade-off example: a knob from "no change" to "fully anonymized".

``blend(image, pii_mask, boxes, alpha=...)`` mixes, inside the PII region only, the original
with a fully anonymized version of it (the built-in pixelate with 16-pixel blocks):
``(1 - alpha) * original + alpha * pixelated``, rounded half to even. ``alpha = 0`` is the
original (no privacy, full utility), ``alpha = 1`` the pixelated image. It stands in for a
method with a privacy knob, such as StyleID's: sweep it with

    bench run --method examples.tunable_blend:blend --param alpha=0,0.25,0.5,0.75,1

and its curve appears in the trade-off views beside the built-ins' sweeps. The parameter is
declared with its bounds (`bench_parameters`), so ``--param alpha=2`` is refused in one line;
without the declaration, the keyword argument's default would make it a float parameter.
"""

from __future__ import annotations

import numpy as np

from bench.methods import Parameter, pixelate


def blend(image: np.ndarray, pii_mask: np.ndarray, boxes, alpha: float = 1.0) -> np.ndarray:
    anonymized = pixelate(image, pii_mask, boxes, block=16)
    mixed = (1.0 - alpha) * image.astype(np.float64) + alpha * anonymized.astype(np.float64)
    out = image.copy()
    out[pii_mask] = np.clip(np.rint(mixed[pii_mask]), 0, 255).astype(np.uint8)
    return out


blend.bench_parameters = (Parameter("alpha", 1.0, "float", minimum=0.0, maximum=1.0),)
