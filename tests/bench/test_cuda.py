"""The CUDA paths: run by scripts/gpu_check.py (`pytest -m cuda`); skipped without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.data import dataset
from bench.flows import perf
from bench.scoring.runner import host_batch, score_pairs, to_device
from bench.scoring.store import ResultsStore
from metrics.registry import build_metric

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PAPER_METRICS = ["mse", "psnr", "ssim", "lpips", "inception_dist"]
# GPU and CPU both compute in IEEE float32 (TF32 is off, see metrics.base.use_ieee_float32);
# values differ only by the order of float32 sums in the kernels.
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """The user's LPIPS and Inception weights where found, else stand-ins (values then differ
    from pretrained ones, but GPU and CPU use the same)."""
    folder = tmp_path_factory.mktemp("weights")
    setup = perf.prepare_weights(["lpips", "inception_dist"], folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCH_WEIGHTS_DIR", str(setup.directory))
        yield setup.directory


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    csv_path = perf.write_synthetic_pairs(tmp_path_factory.mktemp("pairs"), 12, (96, 128))
    return dataset.load_pairs(csv_path, root=csv_path.parent)


def test_metrics_are_placed_on_the_gpu(weights_dir):
    original, anonymized = torch.rand(2, 3, 64, 64, device="cuda"), torch.rand(2, 3, 64, 64, device="cuda")
    for name in PAPER_METRICS:
        metric = build_metric(name, device="cuda")
        assert metric.device.type == "cuda"
        for module in vars(metric).values():
            if isinstance(module, torch.nn.Module):
                assert all(p.device.type == "cuda" for p in module.parameters()), name
        values = metric.score(original, anonymized)
        assert values.dtype == np.float64 and values.shape == (2,)


def test_cuda_convolutions_run_in_ieee_float32(weights_dir):
    build_metric("lpips", device="cuda")
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"


def test_batches_go_through_pinned_memory_in_one_transfer():
    arrays = [np.random.default_rng(i).integers(0, 256, (32, 48, 3), dtype=np.uint8) for i in range(3)]
    host = host_batch(arrays, torch.device("cuda"))
    assert host.is_pinned()
    on_gpu = to_device(arrays, torch.device("cuda"))
    assert on_gpu.device.type == "cuda" and on_gpu.shape == (3, 3, 32, 48)
    torch.testing.assert_close(on_gpu.cpu(), to_device(arrays, torch.device("cpu")), rtol=0, atol=0)


def test_per_pair_values_on_the_gpu_agree_with_the_cpu(weights_dir, pairs, tmp_path):
    values = {}
    for device in ("cpu", "cuda"):
        with ResultsStore(tmp_path / f"{device}.sqlite") as store:
            result = score_pairs(pairs, PAPER_METRICS, store=store, device=device, batch_size=5, progress=False)
        assert result.complete, result.summary_lines()
        values[device] = result.scores.sort_values(["metric", "row"]).reset_index(drop=True)
    cpu, gpu = values["cpu"], values["cuda"]
    assert list(cpu["metric"]) == list(gpu["metric"]) and list(cpu["row"]) == list(gpu["row"])
    for name in PAPER_METRICS:
        rows = cpu["metric"] == name
        np.testing.assert_allclose(gpu.loc[rows, "value"], cpu.loc[rows, "value"], rtol=RTOL, atol=ATOL,
                                   err_msg=name)
