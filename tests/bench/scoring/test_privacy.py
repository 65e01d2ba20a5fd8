"""Privacy attacks on the demo set: unchanged originals are found and re-identified, a solid
mask hides the face, mild blur and pixelation fall between; a missing model file is one line
and the other attack still runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

pytest.importorskip("facenet_pytorch", reason="facenet-pytorch not installed")
pytest.importorskip("dlib", reason="dlib not installed")

from bench.errors import InputError  # noqa: E402
from bench.scoring.privacy import AttackPair, load_identities, privacy_attacks  # noqa: E402
from reports.privacy import roc_plot  # noqa: E402
from metrics import weights  # noqa: E402

DEMO = Path(__file__).resolve().parents[3] / "fixtures" / "demo"
IMAGES = DEMO / "images"
PII = json.loads((DEMO / "pii.json").read_text())


@pytest.fixture(autouse=True)
def weights_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path_factory.getbasetemp() / "privacy-weights"))


def _mild(kind: str, key: str, out: Path) -> Path:
    """A weak blur (sigma = box width / 64) or 2x2 pixelation of the PII box."""
    image = Image.open(IMAGES / key).convert("RGB")
    x0, y0, x1, y1 = PII[key][0]
    region = image.crop((x0, y0, x1, y1))
    if kind == "blur":
        region = region.filter(ImageFilter.GaussianBlur((x1 - x0) / 64))
    else:
        region = region.resize(((x1 - x0) // 2, (y1 - y0) // 2), Image.BOX).resize((x1 - x0, y1 - y0), Image.NEAREST)
    image.paste(region, (x0, y0))
    path = out / f"{kind}_{key.replace('/', '_')}"
    image.save(path)
    return path


def _demo_pairs(out: Path, keys=tuple(PII)) -> list[AttackPair]:
    pairs = []
    for key in keys:
        original = IMAGES / key
        pairs.append(AttackPair("identity", "global", key, original, original))
        for method in ("mask", "blur", "pixelate"):
            anonymized = IMAGES / "anonymized" / method / "global" / key.removeprefix("originals/")
            pairs.append(AttackPair(method, "global", key, original, anonymized))
        for kind in ("blur", "pixelate"):
            pairs.append(AttackPair(f"mild_{kind}", "global", key, original, _mild(kind, key, out)))
    return pairs


@pytest.mark.slow
def test_demo_set_identity_found_mask_hidden_mild_methods_between(tmp_path):
    report = privacy_attacks(_demo_pairs(tmp_path), load_identities(DEMO, list(PII)))
    rows = {row.method: row for row in report.rows}
    print("\n".join(report.summary_lines()))  # the measured numbers, shown with -s
    assert not report.unavailable
    identity, mask = rows["identity"], rows["mask"]
    assert identity.detection.successes == identity.detection.n == 8
    # coco/camera.png's face (21 x 28 px) is below dlib's HOG detector's size; with MTCNN's box
    # every unchanged original is re-identified.
    assert identity.rank1.successes == identity.rank1.n == 8 and identity.identification.not_found == 0
    assert "MTCNN" in report.conventions["reid"]["details"]["detector"]
    assert identity.verification.tar_at_far[1e-2] > 0.9
    assert mask.detection.successes == 0 and mask.rank1.value <= mask.identification.chance(1)
    assert mask.identification.not_found == 8
    # The second detector family agrees at the extremes (it misses the two camera originals).
    assert identity.second_detection.successes == identity.second_detection.n >= 6
    assert mask.second_detection.successes == 0
    for name in ("mild_blur", "mild_pixelate"):
        row = rows[name]
        assert 0 < row.detection.value < 1 and 0 < row.rank1.value < identity.rank1.value, name
        assert row.detection.ci_low < row.detection.value < row.detection.ci_high
    assert identity.adaptive.rank1.n == 5 and identity.adaptive.chance == pytest.approx(1 / 3)
    assert roc_plot(report).startswith(b"\x89PNG")


def test_rerun_reuses_cached_features_and_records_conventions(tmp_path, monkeypatch):
    face = "originals/lfw/astronaut_face.png"
    pairs = [pair for pair in _demo_pairs(tmp_path, [face]) if pair.method in ("identity", "mask")]
    cache = tmp_path / "privacy_features.npz"
    first = privacy_attacks(pairs, {}, cache_path=cache)
    assert cache.is_file()
    conventions = first.conventions
    assert conventions["gallery"]["global"] == {"photos": 1, "identities": 1}
    assert conventions["reid"]["details"]["alignment"] == "dlib 5-point shape predictor"
    assert conventions["reid"]["details"]["detector"].startswith("MTCNN")
    assert conventions["detection"]["details"]["thresholds"] == [0.6, 0.7, 0.7]

    def refuse(*args, **kwargs):
        raise AssertionError("a cached image was detected or embedded again")

    from metrics.base import FeaturePairMetric

    monkeypatch.setattr(FeaturePairMetric, "features", refuse)
    again = privacy_attacks(pairs, {}, cache_path=cache)
    assert [row.detection for row in again.rows] == [row.detection for row in first.rows]
    assert [row.rank1 for row in again.rows] == [row.rank1 for row in first.rows]


def test_missing_embedding_file_is_one_line_and_detection_still_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "empty"))
    key = weights.SPECS["dlib_shape_predictor_5"].offline
    converter = weights.OFFLINE_CONVERTERS[key]
    monkeypatch.setitem(weights.OFFLINE_CONVERTERS, key,
                        converter.__class__(**{**converter.__dict__, "source": lambda: None}))
    face = "originals/lfw/astronaut_face.png"
    pairs = [pair for pair in _demo_pairs(tmp_path, [face]) if pair.method in ("identity", "mask")]
    report = privacy_attacks(pairs, {})
    (reason,) = report.unavailable.values()
    assert "dlib_shape_predictor_5" in reason and "\n" not in reason
    rows = {row.method: row for row in report.rows}
    assert rows["identity"].detection.successes == 1 and rows["mask"].detection.successes == 0
    assert rows["identity"].identification is None
    assert any("unavailable" in line for line in report.summary_lines())


def test_identities_from_file_layout_and_errors(tmp_path):
    keys = ["originals/lfw/Ada_Lovelace/1.png", "originals/lfw/Ada_Lovelace/2.png", "originals/coco/x.png"]
    assert load_identities(tmp_path, keys) == {keys[0]: "Ada_Lovelace", keys[1]: "Ada_Lovelace", keys[2]: keys[2]}
    (tmp_path / "identities.json").write_text(json.dumps({keys[2]: "someone"}))
    assert load_identities(tmp_path, keys)[keys[2]] == "someone"
    (tmp_path / "identities.json").write_text(json.dumps({"originals/nope.png": "someone"}))
    with pytest.raises(InputError, match="not originals of the set"):
        load_identities(tmp_path, keys)
    demo = load_identities(DEMO, list(PII))
    assert sorted(set(demo.values())) == ["camera_photographer", "eileen_collins", "grace_hopper"]
    assert np.all([list(demo.values()).count(name) >= 2 for name in set(demo.values())])


def test_a_run_without_any_attack_model_lists_them_and_ranks_the_rest(tmp_path, monkeypatch):
    """`bench run --method` runs the attacks by default; with none of their models, each is one
    not-computed line with its fix and the perceptual leaderboard is still written."""
    from bench.cli import main
    from metrics import registry
    from metrics.errors import WeightsError
    from tests.bench.benchset import write_benchmark_set

    real = registry.build_metric

    def build(target, *args, **kwargs):
        if target.startswith(("metrics.detection:", "metrics.reid:")):
            raise WeightsError(f"{target}: model file missing; run `bench weights fetch`")
        return real(target, *args, **kwargs)

    monkeypatch.setattr(registry, "build_metric", build)
    benchset = write_benchmark_set(tmp_path / "set")
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--method", "mask", "--dataset", "set", "--metrics", "mse", "--out", "out",
                 "--store", "s.sqlite", "--no-progress", "--n-boot", "20"])
    assert code == 0
    markdown = (tmp_path / "out" / "set" / "leaderboard.md").read_text()
    assert "### Anonymization leaderboard" in markdown and "MSE ↑" in markdown
    for attack in ("detection (MTCNN)", "detection (LBP cascade)", "re-identification (dlib)"):
        assert f"{attack}: not computed — metrics." in markdown, attack
    assert (tmp_path / "out" / "set" / "privacy.json").is_file()
    assert benchset.is_dir()


def test_no_privacy_skips_the_attacks(tmp_path, monkeypatch):
    import bench.flows.benchmark
    from bench.cli import main
    from tests.bench.benchset import write_benchmark_set

    def refuse(*args, **kwargs):
        raise AssertionError("--no-privacy ran the attacks")

    monkeypatch.setattr(bench.flows.benchmark, "_privacy", refuse)
    write_benchmark_set(tmp_path / "set")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "set").mkdir(parents=True)
    for stale in ("privacy.md", "privacy.json", "privacy.html", "privacy_roc.png"):  # an earlier run's detail
        (tmp_path / "out" / "set" / stale).write_text("earlier run")
    assert main(["run", "--method", "mask", "--dataset", "set", "--metrics", "mse", "--out", "out",
                 "--store", "s.sqlite", "--no-progress", "--n-boot", "20", "--no-privacy"]) == 0
    assert not list((tmp_path / "out" / "set").glob("privacy*")), "no earlier run's detail passes for this one's"
    assert "Privacy attacks" not in (tmp_path / "out" / "set" / "leaderboard.md").read_text()
    assert not (tmp_path / "out" / "set" / "privacy.json").exists()
