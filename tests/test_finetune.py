"""Fine-tuning on a tiny model and 32x32 images: behaviour, not accuracy records."""

import json

import pytest
import torch

from edgeft import artifact
from edgeft.errors import ConfigError, TrainingError
from edgeft.finetune import FinetuneConfig, finetune
from edgeft.training.split import check_equivalent, split
from edgeft.models import create
from tests.conftest import TINY, assert_one_line_error, write_folder



def cfg(**kw):
    return FinetuneConfig(**{**TINY, **kw})


@pytest.mark.parametrize("arch", ["test_efficientnet", "test_resnet", "mobilenetv3_small_050"])
@pytest.mark.parametrize("mode, blocks", [("partial", 2), ("linear", 0)])
def test_prefix_then_suffix_equals_the_model(arch, mode, blocks):
    model, _ = create(arch, num_classes=2)
    prefix, suffix = split(model, mode, blocks)
    assert prefix is not None
    assert check_equivalent(model, prefix, suffix, torch.randn(2, 3, 64, 64)) < 1e-5


@pytest.mark.parametrize("mode", ["full", "partial", "linear"])
def test_modes_learn_and_write_an_artifact(tiny_data, tmp_path, mode):
    art = finetune(cfg(mode=mode, trainable_blocks=3, epochs=8, patience=8), tiny_data, tmp_path / "a")
    m = art.meta.metrics
    assert m["test"]["n"] == 16 and set(m["test"]["per_class"]) == {"bad", "good"}
    assert m["val"]["accuracy"] >= 0.75, m["val"]  # top/bottom bars: easy once anything trains
    loaded = artifact.load(tmp_path / "a", kind="torch")
    assert loaded.meta.class_names == ["bad", "good"]
    assert loaded.meta.input.size == (32, 32)
    assert loaded.meta.lineage[0]["stage"] == "finetune" and loaded.meta.lineage[0]["params"]["mode"] == mode
    assert not (tmp_path / "a.work").exists()


def test_frozen_part_does_not_change(tiny_data, tmp_path):
    ref, _ = create("test_efficientnet", num_classes=2)
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    art = finetune(cfg(weights=str(tmp_path / "w.pth"), mode="partial", trainable_blocks=1, epochs=2),
                   tiny_data, tmp_path / "a")
    sd = torch.load(art.model_path, weights_only=True)
    torch.testing.assert_close(sd["conv_stem.weight"], ref.state_dict()["conv_stem.weight"])
    torch.testing.assert_close(sd["bn1.running_mean"], ref.state_dict()["bn1.running_mean"])
    assert not torch.equal(sd["conv_head.weight"], ref.state_dict()["conv_head.weight"])


def test_seed_makes_runs_identical(tiny_data, tmp_path):
    a = finetune(cfg(epochs=2, mode="full", device="cpu"), tiny_data, tmp_path / "a")
    b = finetune(cfg(epochs=2, mode="full", device="cpu"), tiny_data, tmp_path / "b")
    sa, sb = (torch.load(x.model_path, weights_only=True) for x in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tta_metrics_are_reported(tiny_data, tmp_path):
    art = finetune(cfg(epochs=1, tta_views=8), tiny_data, tmp_path / "a")
    assert art.meta.metrics["test_tta"]["n"] == 16 and art.meta.extra["tta_views"] == 8


def test_nan_loss_stops_with_a_clear_message(tiny_data, tmp_path):
    with pytest.raises(TrainingError, match="loss became nan.*lower --lr"):
        finetune(cfg(mode="full", lr=1e30, grad_clip=0, epochs=3), tiny_data, tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_interrupt_keeps_last_checkpoint_and_resume_finishes(tiny_data, tmp_path, monkeypatch):
    """Resumed = uninterrupted, exactly, on the CPU (cuDNN's kernels are not bit-for-bit repeatable)."""
    from edgeft.training import loop

    out = tmp_path / "a"
    real = loop._save_checkpoint
    calls = {"n": 0}

    def save_then_interrupt(*args, **kwargs):
        real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg(mode="full", epochs=4, device="cpu"), tiny_data, out)
    assert not out.exists() and (tmp_path / "a.work" / "last.pt").is_file()
    monkeypatch.setattr(loop, "_save_checkpoint", real)
    art = finetune(cfg(mode="full", epochs=4, device="cpu"), tiny_data, out, resume=True)
    assert art.meta.metrics["epochs_run"] == 4
    assert [h["epoch"] for h in art.meta.extra["history"]] == [1, 2, 3, 4]
    uninterrupted = finetune(cfg(mode="full", epochs=4, device="cpu"), tiny_data, tmp_path / "b")
    assert art.meta.metrics["test"] == uninterrupted.meta.metrics["test"]


def test_resume_with_other_settings_is_refused(tiny_data, tmp_path, monkeypatch):
    from edgeft.training import loop

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    (tmp_path / "a.work").mkdir()
    real = loop._save_checkpoint
    monkeypatch.setattr(loop, "_save_checkpoint", lambda *a, **k: (real(*a, **k), interrupt()))
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg(mode="full", epochs=2), tiny_data, tmp_path / "a")
    with pytest.raises(ConfigError, match="different settings"):
        finetune(cfg(mode="full", epochs=2, lr=1e-4), tiny_data, tmp_path / "a", resume=True)


def test_val_carved_and_recorded(tmp_path):
    root = write_folder(tmp_path / "d", {"train": 12})
    art = finetune(cfg(epochs=1), root, tmp_path / "a")
    assert art.meta.lineage[0]["params"]["val_carved"] is True
    assert art.meta.metrics["val"]["n"] == 4 and "test" not in art.meta.metrics


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="mode must be one of full, partial, linear"):
        FinetuneConfig(mode="half")
    with pytest.raises(ConfigError, match="unknown field 'epoch'.*did you mean: epochs"):
        FinetuneConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="augment.rotate"):
        FinetuneConfig(augment={"rotate": 3})
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        FinetuneConfig(batch_size=0)


def test_cli_finetune_and_eval(cli, tiny_data, tmp_path):
    out = tmp_path / "a"
    args = ["finetune", "--model", "test_efficientnet", "--weights", "none", "--data", tiny_data, "--out", out,
            "--image-size", "32", "--resize", "stretch", "--epochs", "2", "--set", "batch_size=8", "--set", "trainable_blocks=2"]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert "test:" in r.output and "confusion" in r.output
    assert_one_line_error(cli(*args), "output exists", "--force")
    r = cli("eval", out, "--data", tiny_data, "--json")
    assert r.exit_code == 0
    stored = artifact.load(out).meta.metrics["test"]
    assert json.loads(r.output)["accuracy"] == stored["accuracy"]


@pytest.mark.parametrize("args, fragments", [
    (["--mode", "full", "--set", "epochs=0"], ["epochs must be an integer >= 1"]),
    (["--set", "bogus=1"], ["unknown field 'bogus'"]),
    (["--model", "test_efficientnett"], ["unknown architecture", "did you mean"]),
])
def test_cli_bad_options(cli, tiny_data, tmp_path, args, fragments):
    r = cli("finetune", "--weights", "none", "--data", tiny_data, "--out", tmp_path / "a", *args)
    assert_one_line_error(r, *fragments)


def test_cli_single_class_folder(cli, tmp_path):
    root = write_folder(tmp_path / "d", {"train": 3}, classes=("only",))
    r = cli("finetune", "--model", "test_efficientnet", "--weights", "none", "--data", root, "--out", tmp_path / "a")
    assert_one_line_error(r, "at least 2")


def test_torchrun_two_processes_train_one_artifact(tiny_data, tmp_path):
    """DDP on CPU (gloo): two ranks shard the epoch, rank 0 writes the artifact and reports."""
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=str(__import__("pathlib").Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    out = tmp_path / "ddp"
    r = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29561", "-m", "edgeft.cli", "-q",
                        "finetune", "--model", "test_efficientnet", "--weights", "none", "--data", str(tiny_data),
                        "--out", str(out), "--image-size", "32", "--resize", "stretch", "--epochs", "2",
                        "--mode", "full", "--threads", "1", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("wrote ") == 1
    meta = artifact.load(out).meta
    assert meta.metrics["epochs_run"] == 2 and meta.metrics["test"]["n"] == 16


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    """torchrun --nproc_per_node 2 on a one-GPU machine: say so, instead of CUDA's 'invalid device ordinal'."""
    from edgeft.errors import DependencyError
    from edgeft.training import loop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(DependencyError, match="the machine has 1; start at most 1"):
        loop._device(cfg())
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert loop._device(cfg()) == torch.device("cuda", 0)
    assert loop._device(cfg(device="cpu")) == torch.device("cpu")


def test_partial_mode_on_a_family_without_a_known_layout_freezes_by_parameter_groups():
    """ConvNeXt has no cut point edgeft knows: no prefix to cache, but only the last groups and the head train."""
    from edgeft.training.split import freeze_for

    model, _ = create("test_convnext", num_classes=2)
    assert split(model, "partial", 2)[0] is None
    trainable = freeze_for(model, "partial", 2)
    assert 0 < len(trainable) < len(list(model.parameters()))
    assert any(n.startswith("head.fc") for n in trainable) and not any(n.startswith("stem") for n in trainable)


def _graded(tiny_data, tmp_path, grade):
    """A copy of tiny_data with a split.csv grading every image: ``grade(class name, index)``."""
    import csv
    import shutil

    root = tmp_path / "graded"
    shutil.copytree(tiny_data, root)
    rows = [("split", "class", "file", "p_bad")]
    for p in sorted(root.glob("*/*/*.png")):
        rows.append((p.parent.parent.name, p.parent.name, p.name, f"{grade(p.parent.name, len(rows)):.3f}"))
    with open(root / "split.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


def test_expert_grades_are_the_training_targets(tiny_data, tmp_path):
    """Grades replace the hard labels: graded 'bad' as certain as the folders say, the model learns the task; graded
    with the folders' meaning inverted, it learns the inverse (so the grades, not the folders, were trained on)."""
    import numpy as np

    from edgeft.data.imagefolder import load_dataset
    from edgeft.training.loop import _soft_targets

    root = _graded(tiny_data, tmp_path, lambda c, i: 0.95 if c == "bad" else 0.05)
    c = cfg(mode="full", epochs=8, patience=8, grades="split.csv:p_bad:bad", monitor="auroc")
    ds = load_dataset(root, finetune(c, root, tmp_path / "a").meta.input)
    t = _soft_targets(c, ds)
    assert t.shape == (len(ds.train), 2) and np.allclose(t.sum(1), 1)
    assert np.allclose(t[ds.train.labels == 0, 0], 0.95) and np.allclose(t[ds.train.labels == 1, 0], 0.05)
    learned = artifact.load(tmp_path / "a").meta.metrics
    learned_history = artifact.load(tmp_path / "a").meta.extra["history"]
    assert learned["val"]["accuracy"] >= 0.75 and learned["best_epoch"] >= 1
    inverted = _graded(tiny_data, tmp_path / "inv", lambda c, i: 0.05 if c == "bad" else 0.95)
    a = finetune(cfg(mode="full", epochs=8, patience=8, grades="split.csv:p_bad:bad"), inverted, tmp_path / "b")
    # the best epoch is chosen on val's folder labels, so read the last epochs: the inverted grades were learned
    late = [h["val_auroc"] for h in a.meta.extra["history"][-4:]]
    assert sum(late) / 4 < 0.5 < sum(h["val_auroc"] for h in learned_history[-4:]) / 4


def test_bad_grades_say_what_to_fix(tiny_data, tmp_path):
    from edgeft.data.imagefolder import read_grades, load_split
    from edgeft.errors import DataError
    from tests.conftest import tiny_contract

    with pytest.raises(ConfigError, match="FILE.csv:COLUMN:CLASS"):
        cfg(grades="split.csv")
    root = _graded(tiny_data, tmp_path, lambda c, i: 1.0 if c == "bad" else 0.0)
    s = load_split(root, "train", tiny_contract())
    with pytest.raises(DataError, match="no 'defect' column"):
        read_grades(root, "split.csv", "defect", s)
    with pytest.raises(DataError, match="not found"):
        read_grades(root, "nope.csv", "p_bad", s)
    lines = (root / "split.csv").read_text().splitlines()
    (root / "split.csv").write_text("\n".join(line for line in lines if not line.startswith("train,bad,bad_000")))
    with pytest.raises(DataError, match="images are not in"):
        read_grades(root, "split.csv", "p_bad", s)
    with pytest.raises(ConfigError, match="'cracked' is not one of bad, good"):
        finetune(cfg(epochs=1, grades="split.csv:p_bad:cracked"), root, tmp_path / "x")
