"""bench.scoring.chunking: a feature metric's CPU forward-pass size is measured, then kept."""

from __future__ import annotations

import torch

from bench.scoring.chunking import CANDIDATES, ChunkSizer


def _drive(sizer: ChunkSizer, per_image_seconds: dict[int, float], passes: int) -> list[int]:
    """Ask for `passes` forward passes, each reported to take its size's per-image time."""
    sizes = []
    for _ in range(passes):
        size = sizer.next_size()
        sizes.append(size)
        sizer.record(size, size, per_image_seconds[size] * size)
    return sizes


def test_each_size_is_tried_twice_then_the_fastest_is_kept():
    sizer = ChunkSizer()
    fastest = CANDIDATES[1]
    cost = {size: 0.14 if size == fastest else 0.17 + 0.01 * index for index, size in enumerate(CANDIDATES)}
    sizes = _drive(sizer, cost, 2 * len(CANDIDATES) + 5)
    assert sizes[:2 * len(CANDIDATES)] == [size for size in CANDIDATES for _ in range(2)]
    assert sizes[2 * len(CANDIDATES):] == [fastest] * 5
    assert sizer.chosen == fastest


def test_only_the_second_pass_of_a_size_is_timed():
    # The first pass of a new shape pays for building its kernels: it must not decide.
    sizer = ChunkSizer()
    smallest = CANDIDATES[0]
    for size in CANDIDATES:
        sizer.record(size, size, 100.0 if size == smallest else 1.0 * size)  # warm-up: it looks terrible
        sizer.record(size, size, (0.1 if size == smallest else 1.0) * size)  # timed: it is the fastest
    assert sizer.next_size() == smallest


def test_a_short_last_pass_says_nothing_about_its_size():
    sizer = ChunkSizer()
    sizer.record(CANDIDATES[0], 1, 0.001)
    sizer.record(CANDIDATES[0], 1, 0.001)
    assert sizer.passes == {} and sizer.next_size() == CANDIDATES[0]


def test_encode_covers_every_image_once_in_order():
    sizer = ChunkSizer()
    images = torch.arange(101, dtype=torch.float32).reshape(101, 1, 1, 1)
    seen = sizer.encode(images, lambda part: part.flatten().tolist(), lambda values, span: (values, span))
    assert [value for values, _ in seen for value in values] == list(range(101))
    for values, span in seen:
        assert values == list(range(101))[span]
    assert [len(values) for values, _ in seen][:4] == [CANDIDATES[0]] * 2 + [CANDIDATES[1]] * 2


def test_only_the_forward_pass_is_timed():
    # What the caller does with a pass's features (comparing them with the originals') is not
    # the pass's cost: a slow `then` must not steer the size.
    import time

    sizer = ChunkSizer()
    smallest = CANDIDATES[0]
    sizer.encode(torch.zeros(2 * smallest, 1, 1, 1), len, lambda count, span: time.sleep(0.05))
    assert sizer.timed == {smallest: sizer.timed[smallest]} and sizer.timed[smallest] < 0.01


def test_a_gpu_batch_is_one_pass():
    sizer = ChunkSizer()
    images = torch.empty(40, 3, 8, 8, device="meta")  # any non-CPU device
    parts = sizer.encode(images, len, lambda count, span: (count, span))
    assert parts == [(40, slice(0, 40))] and sizer.passes == {}
