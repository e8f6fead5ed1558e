"""The CUDA paths, on a machine with an NVIDIA GPU: training, pruning recovery and inference on the device.

Skipped without one (CI has none); ``benchmarks/gpu_check.sh`` runs them where a GPU exists.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")]

from edgeft import artifact  # noqa: E402
from edgeft.finetune import FinetuneConfig, finetune  # noqa: E402
from edgeft.runtime import Predictor  # noqa: E402

from tests.conftest import TINY as CPU_TINY  # noqa: E402

TINY = {**CPU_TINY, "device": "cuda"}
FRAMES = [np.full((32, 32), v, np.uint8) for v in (20, 90, 160, 240)]


@pytest.mark.parametrize("mode", ["full", "partial"])
def test_finetune_on_the_gpu_gives_an_artifact_the_cpu_runs(tiny_data, tmp_path, mode):
    art = finetune(FinetuneConfig(**TINY, mode=mode, epochs=6, patience=6), tiny_data, tmp_path / "a")
    assert art.meta.metrics["device"].startswith("cuda"), art.meta.metrics["device"]
    assert art.meta.metrics["val"]["accuracy"] >= 0.75, art.meta.metrics["val"]
    assert next(iter(torch.load(art.model_path, weights_only=True).values())).device.type == "cpu"
    cpu, gpu = Predictor(art.path, backend="torch"), Predictor(art.path, backend="torch-cuda")
    assert gpu.backend_name == "torch-cuda"
    np.testing.assert_allclose(gpu.logits(FRAMES), cpu.logits(FRAMES), rtol=1e-2, atol=1e-2)  # TF32 convolutions


def test_auto_backend_picks_the_gpu_for_a_torch_artifact(tmp_path):
    from tests.conftest import make_artifact

    assert Predictor(make_artifact(tmp_path / "t").path).backend_name == "torch-cuda"


def test_pruning_recovers_on_the_gpu(tiny_data, tmp_path):
    from edgeft.prune import PruneConfig, prune
    from tests.conftest import make_artifact

    parent = make_artifact(tmp_path / "parent")
    a = prune(parent.path, tiny_data, tmp_path / "pruned",
              PruneConfig(target_macs=0.6, steps=10, round_to=8, recover_epochs=2, distill=True),
              measure_latency=False)
    assert a.meta.metrics["prune"]["macs_after"] <= 0.6 * a.meta.metrics["prune"]["macs_before"]
    assert a.meta.metrics["device"].startswith("cuda"), a.meta.metrics["device"]
    reloaded = artifact.load(a.path)
    out = Predictor(reloaded.path, backend="torch-cuda").logits(FRAMES)
    assert out.shape == (4, 2) and np.isfinite(out).all()


def test_infer_cli_on_the_gpu(cli, tiny_data, tmp_path):
    from tests.conftest import make_artifact

    a = make_artifact(tmp_path / "t")
    out = tmp_path / "p.jsonl"
    r = cli("infer", a.path, str(tiny_data / "test"), "--backend", "torch-cuda", "--out", out)
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 16
