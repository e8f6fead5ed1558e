"""``mode: lora``: peft's adapters on the blocks partial fine-tuning would train, merged before the chain."""

from __future__ import annotations

import pytest
import torch

from edgeft import artifact
from tests.conftest import assert_one_line_error

pytest.importorskip("peft", reason="mode lora needs peft (edgeft[lora])")

TINY_LORA = ["--model", "test_efficientnet", "--weights", "none", "--image-size", "32", "--resize", "stretch",
             "--batch-size", "8", "--threads", "2", "--mode", "lora", "--trainable-blocks", "2"]


def test_lora_trains_adapters_merges_them_and_the_chain_takes_the_plain_model(tiny_data, tmp_path, cli):
    from edgeft.data import calibration
    from edgeft.export.stage import export
    from edgeft.models import from_artifact
    from edgeft.prune.config import PruneConfig
    from edgeft.prune.pruner import prune
    from edgeft.quantize.ptq import QuantizeConfig, quantize

    r = cli("finetune", "--data", tiny_data, "--out", tmp_path / "lora", "--epochs", "2", "--lr", "0.01",
            *TINY_LORA, "--set", "lora_rank=4")
    assert r.exit_code == 0, r.output
    a = artifact.load(tmp_path / "lora")
    m = a.meta.metrics["lora"]
    assert m["rank"] == 4 and m["targets"] >= 2 and m["merge_max_abs_diff"] <= 1e-5
    full = sum(p.numel() for p in from_artifact(a).parameters())
    assert 0 < m["trainable_params"] < full / 10  # adapters only (the head trains in full besides)
    assert (tmp_path / "lora" / "adapter.safetensors").stat().st_size == m["adapter_bytes"]
    sd = torch.load(a.model_path, weights_only=True)
    assert not any("lora" in k for k in sd)  # merged: the architecture's own keys, nothing extra at inference
    from safetensors.torch import load_file

    adapter = load_file(str(tmp_path / "lora" / "adapter.safetensors"))
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    assert any(v.abs().max() > 0 for k, v in adapter.items() if ".lora_B." in k)  # trained (B starts at zero)
    assert a.meta.lineage[0]["params"]["mode"] == "lora"

    prune(a.path, tiny_data, tmp_path / "p", PruneConfig(target_macs=0.7, steps=5, round_to=4, recover_epochs=1,
                                                          recover_mode="partial", threads=2), measure_latency=False)
    export(tmp_path / "p", tmp_path / "x", data=tiny_data, n=8)  # parity checked on real images
    manifest = calibration.save(calibration.create(tiny_data, n=16), tmp_path / "calib.json")
    q = quantize(tmp_path / "x", tmp_path / "q", QuantizeConfig(auto_exclude=False, threads=2), manifest, tiny_data)
    assert q.meta.extra.get("quantized")


@pytest.mark.parametrize("setting, fragments", [
    ("lora_targets=[conv_pww]", ["lora_targets: 'conv_pww' is not a Conv2d or Linear layer", "did you mean",
                                 "conv_pw"]),
    ("lora_rank=0", ["lora_rank must be an integer >= 1"]),
    ("lora_targets=[blocks.1.0.conv_pwl]", ["blocks.1.0.conv_pwl lies in the frozen first blocks", "trainable_blocks"]),
    ("lora_rank=4096", ["lora_rank 4096 is larger than layer", "allows"]),
])
def test_bad_lora_settings_stop_in_one_line_before_training(tiny_data, tmp_path, cli, setting, fragments):
    r = cli("finetune", "--data", tiny_data, "--out", tmp_path / "o", "--epochs", "1", *TINY_LORA, "--set", setting)
    assert_one_line_error(r, *fragments)
    assert not (tmp_path / "o").exists()


def test_lora_on_an_onnx_import_is_refused(tiny_onnx, tiny_data, tmp_path, cli):
    r = cli("finetune", "--data", tiny_data, "--out", tmp_path / "o", "--epochs", "1", *TINY_LORA[:2],
            "--weights", str(tiny_onnx.model_path), *TINY_LORA[4:])
    assert_one_line_error(r, "is an ONNX file, which carries no PyTorch weights to fine-tune or adapt (LoRA)")
    assert not (tmp_path / "o").exists()


def test_a_peft_adapter_imports_merged_over_its_base(tiny_data, tmp_path, cli):
    """A LoRA adapter a user trained with peft on a timm model (head in modules_to_save) imports over its base
    weights, merged: the artifact's logits are the adapted model's."""
    import numpy as np
    import peft
    import timm

    from edgeft.data import load_split
    from edgeft.models import from_artifact
    from edgeft.models.inference import torch_logits

    torch.manual_seed(0)
    base = timm.create_model("test_efficientnet", num_classes=1000)
    torch.save(base.state_dict(), tmp_path / "base.pth")
    model = timm.create_model("test_efficientnet", num_classes=1000)
    model.load_state_dict(torch.load(tmp_path / "base.pth", weights_only=True))
    model.reset_classifier(2)
    adapted = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["conv_pw", "conv_pwl"],
                                                         modules_to_save=["classifier"]))
    for name, p in adapted.named_parameters():
        if "lora_B" in name or "modules_to_save" in name:
            torch.nn.init.normal_(p, std=0.05)  # as if trained
    adapted.save_pretrained(str(tmp_path / "adapter"))
    r = cli("import", tmp_path / "adapter", "--model", "test_efficientnet", "--base", tmp_path / "base.pth",
            "--data", tiny_data, "--size", "32", "--resize", "stretch", "--out", tmp_path / "imp")
    assert r.exit_code == 0, r.output
    a = artifact.load(tmp_path / "imp")
    assert a.meta.lineage[0]["params"]["format"] == "peft LoRA adapter (merged)"
    images = load_split(tiny_data, "val", a.meta.input, classes=a.meta.class_names).images[:8]
    want = torch_logits(adapted.eval(), images, a.meta.input)
    got = torch_logits(from_artifact(a), images, a.meta.input)
    assert np.abs(want - got).max() <= 1e-5
    sd = torch.load(a.model_path, weights_only=True)
    assert not any("lora" in k or "base_model" in k for k in sd)


def test_an_adapter_without_its_head_over_an_imagenet_base_is_refused(tiny_data, tmp_path, cli):
    import peft
    import timm

    base = timm.create_model("test_efficientnet", num_classes=1000)
    torch.save(base.state_dict(), tmp_path / "base.pth")
    peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["conv_pw"])).save_pretrained(str(tmp_path / "ad"))
    r = cli("import", tmp_path / "ad", "--model", "test_efficientnet", "--base", tmp_path / "base.pth",
            "--data", tiny_data, "--out", tmp_path / "imp")
    assert_one_line_error(r, "does not carry the classifier head", "modules_to_save")
    assert not (tmp_path / "imp").exists()


def test_the_report_says_the_first_model_was_adapted_with_lora(tiny_data, tmp_path):
    from edgeft.optimize import pipeline
    from edgeft.optimize.recipe import parse

    recipe = parse({"name": "lora", "data": str(tiny_data), "threads": 2,
                    "finetune": {"model": "test_efficientnet", "weights": None, "mode": "lora", "trainable_blocks": 2,
                                 "lora_rank": 4, "image_size": 32, "resize": "stretch", "batch_size": 8, "epochs": 1},
                    "export": {"parity_images": 8},
                    "bench": {"backends": ["ort-cpu"], "duration_s": 0.1, "warmup_s": 0.05, "rounds": 1}},
                   source="lora.yaml")
    pipeline.optimize(recipe, tmp_path / "run")
    lora = artifact.load(tmp_path / "run" / "01-finetune").meta.metrics["lora"]
    md = (tmp_path / "run" / "report.md").read_text()
    assert f"adapted with LoRA (rank 4, {lora['trainable_params']:,} adapter parameters" in md
