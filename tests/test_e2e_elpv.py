"""End to end on the real thing: ImageNet EfficientNet-Lite0 from its package, real ELPV solar-cell images."""

import json

import pytest

from edgeft import artifact

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def elpv(tmp_path_factory):
    from edgeft.data import elpv as builder

    out = tmp_path_factory.mktemp("elpv") / "elpv"
    builder.build(out, seed=0)
    return out


def test_linear_probe_on_real_lite0_beats_the_majority_class(elpv, tmp_path, cli):
    """A fast linear probe (96 px, cached features): far above 'always functional' (68.8%), and `edgeft eval`
    on the written artifact reproduces the training run's test metrics (same preprocessing on both paths)."""
    out = tmp_path / "probe"
    r = cli("finetune", "--data", elpv, "--out", out, "--mode", "linear", "--image-size", "96", "--resize", "stretch",
            "--epochs", "6", "--lr", "0.01", "--set", "cache_views=1")
    assert r.exit_code == 0, r.output
    meta = artifact.load(out).meta
    test = meta.metrics["test"]
    assert test["n"] == 394
    assert test["accuracy"] >= 0.74 and test["balanced_accuracy"] >= 0.68, test
    r = cli("eval", out, "--data", elpv, "--json")
    assert r.exit_code == 0
    assert json.loads(r.output)["confusion"] == test["confusion"]
