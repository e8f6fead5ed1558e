"""``edgeft import``: the user's own fine-tuned model becomes an artifact the rest of the chain takes.

Three kinds of model arrive from outside edgeft:

- a **timm checkpoint** (state dict or safetensors) with ``--model ARCH``: the head's class count is read from the
  weights, and the weights load with a strict check that names the keys that do not fit (and the closest timm or
  torchvision architecture whose keys do);
- a **torchvision classifier** (``--model torchvision:NAME``, a local weights file): pruned, exported and quantized
  like a timm one;
- an **ONNX classifier**: the deploy-only path (eval, decide, PTQ INT8, build, bench, gate, infer); pruning and QAT
  need the PyTorch network and refuse it.

The input contract is declared (``InputContract`` fields) or read: the architecture's registered preprocessing for a
checkpoint, the input shape for an ONNX file (a dynamic height or width must be declared). Class names come from a
list, the ONNX file's edgeft metadata or the data's folders, in the model's output order. With ``data`` the model is
measured on val (and test when asked) through its task, and those numbers become the baseline every later gate
compares with. Nothing is written until every check has passed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeft import artifact as art
from edgeft import progress
from edgeft.contract import InputContract
from edgeft.errors import ConfigError, DataError, DependencyError, ModelError, close_matches

ONNX_SUFFIXES = (".onnx",)
ADAPTER_CONFIG = "adapter_config.json"  # a peft adapter directory's marker


@dataclass
class ImportConfig:
    """What ``edgeft import`` (and a recipe's ``import:`` section) reads.

    ``model``: the file (or a ``peft`` LoRA adapter directory, with ``base`` the weights it adapts); ``arch``: the
    architecture of a checkpoint (a timm name or ``torchvision:NAME``; none for ONNX); ``input``: contract fields that override what is read (size as ``[H, W]``, mean, std, resize, crop_pct,
    interpolation, color, roi, window); ``classes``: class names in the model's output order, or a text file with
    one a line; ``trainable_blocks``: the last N blocks a later partial recovery / partial QAT may retrain (the
    user's fine-tuning is unknown to edgeft, so partial modes need it named); ``splits``: where the baseline is
    measured when data is given (val; test when asked: a recipe measures test itself, once, at the end)."""

    model: str
    arch: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    classes: list[str] | str | None = None
    trainable_blocks: int | None = None
    task: str = "classify"
    splits: list[str] = field(default_factory=lambda: ["val"])  # add test to measure it too (never to tune on)
    base: str | None = None  # a peft adapter's base weights: a checkpoint file, package:NAME or auto (the default)
    layout: str | None = None  # a detector's raw ONNX output: yolo (Ultralytics' (1, 4 + classes, anchors))

    def __post_init__(self) -> None:
        self.model = os.path.expanduser(str(self.model))
        if not isinstance(self.input, dict):
            raise ConfigError(f"import.input must be a mapping of contract fields, got {self.input!r}")
        if self.trainable_blocks is not None and (not isinstance(self.trainable_blocks, int)
                                                  or isinstance(self.trainable_blocks, bool)
                                                  or self.trainable_blocks < 1):
            raise ConfigError(f"import.trainable_blocks must be a positive integer, got {self.trainable_blocks!r}")
        bad = [s for s in self.splits if s not in ("val", "test")]
        if bad or not self.splits:
            raise ConfigError(f"import.splits must name val and/or test, got {self.splits!r}")

    @property
    def is_onnx(self) -> bool:
        return Path(self.model).suffix.lower() in ONNX_SUFFIXES

    @property
    def is_adapter(self) -> bool:
        """A ``peft`` adapter directory (what ``PeftModel.save_pretrained`` writes)."""
        return (Path(self.model) / ADAPTER_CONFIG).is_file()

    def check(self) -> None:
        """What can be refused before anything is read: the file, and an architecture for a checkpoint only."""
        p = Path(self.model)
        if self.base is not None and not self.is_adapter:
            raise ConfigError(f"import.base names the weights a peft adapter adapts; {p.name} is not an adapter "
                              f"directory (no {ADAPTER_CONFIG}): leave out --base")
        if self.is_adapter:
            if not self.arch:
                raise ConfigError(f"import.model: {p.name} is a peft adapter; name the architecture it adapts with "
                                  "--model (import.arch), e.g. efficientnet_lite0")
            declared_contract(self, InputContract())
            return
        if p.is_dir():
            raise ConfigError(f"import.model: {p} is a directory without {ADAPTER_CONFIG}; pass a checkpoint file, an "
                              "ONNX file, or a peft adapter directory (PeftModel.save_pretrained)")
        if not p.is_file():
            raise ConfigError(f"import.model: file not found: {p}; pass a .pth/.pt/.safetensors checkpoint (with "
                              "--model ARCH) or an .onnx file")
        if self.is_onnx and self.arch:
            raise ConfigError(f"import.model: {p.name} is an ONNX file, which carries its own network; leave out "
                              f"--model {self.arch} (import.arch)")
        if not self.is_onnx and not self.arch:
            raise ConfigError(f"import.model: {p.name} is a checkpoint, which holds weights only; name its "
                              "architecture with --model (import.arch): a timm name such as efficientnet_lite0, or "
                              "torchvision:NAME")
        declared_contract(self, InputContract())  # the declared contract fields, checked before anything is read

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def class_list(value: list[str] | str | None) -> list[str] | None:
    """Class names from a list, a comma-separated string or a text file with one name a line."""
    if value is None:
        return None
    if isinstance(value, str):
        p = Path(os.path.expanduser(value))
        if p.is_file():
            names = [line.strip() for line in p.read_text().splitlines() if line.strip()]
        else:
            names = [n.strip() for n in value.split(",") if n.strip()]
    else:
        names = [str(n) for n in value]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"import.classes must name at least two distinct classes in the model's output order (a "
                          f"list, NAME,NAME or a file with one a line), got {names}")
    return names


# ------------------------------------------------------------------------------------------------ checkpoints

def _fits(model, state_dict: dict) -> bool:
    own = model.state_dict()
    return set(own) == set(state_dict) and all(tuple(own[k].shape) == tuple(state_dict[k].shape) for k in own)


def closest_arch(arch: str, state_dict: dict) -> str | None:
    """A timm or torchvision architecture of the same family whose keys and shapes fit the checkpoint exactly (a few
    names built without weights, on the error path only)."""
    import difflib
    import re

    import timm
    import torchvision

    from edgeft.models import classifier_outputs
    from edgeft.runtime.torch_model import TORCHVISION, build, torchvision_name

    tv = torchvision_name(arch)
    name = tv or arch
    family = re.match(r"[a-z]+", name)
    pool = (torchvision.models.list_models(module=torchvision.models) if tv is not None
            else timm.list_models(f"{family.group(0)}*" if family else "*"))
    candidates = difflib.get_close_matches(name, pool, n=12, cutoff=0.5)
    for c in candidates:
        full = f"{TORCHVISION}{c}" if tv is not None else c
        if full == arch:
            continue
        try:
            model = build(full, 1000)
            n = classifier_outputs(model, state_dict)
            if n and n != 1000:
                model = build(full, n)
        except Exception:  # an architecture that cannot be built with defaults is no candidate
            continue
        if _fits(model, state_dict):
            return full
    return None


def load_checkpoint(path: Path, arch: str):
    """``arch`` with the checkpoint's weights (strict) and its class count; errors name the keys that do not fit."""
    from edgeft.models import classifier_outputs, read_state_dict
    from edgeft.runtime.torch_model import build, load_state_dict_strict

    from edgeft.runtime.torch_model import head_of

    sd = read_state_dict(path)
    model = build(arch, 1000)
    n = classifier_outputs(model, sd)
    if n is None:
        head = next(name for name, m in model.named_modules() if m is head_of(model))
        raise ModelError(f"checkpoint {path} has no {head}.weight ({arch}'s classifier; it has "
                         f"{', '.join(list(sd)[:3])}, ...); " + _closest_hint(arch, sd))
    if n != 1000:
        model = build(arch, n)
    try:
        load_state_dict_strict(model, sd, str(path))
    except ModelError as e:
        raise ModelError(f"{str(e).split('; check --model')[0]}; {_closest_hint(arch, sd)}") from None
    return model.eval(), n


def adapter_weights(path: Path) -> Path:
    """The weights file of a peft adapter directory."""
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (path / name).is_file():
            return path / name
    raise ModelError(f"{path} has {ADAPTER_CONFIG} but no adapter_model.safetensors (or .bin); save the adapter "
                     "with PeftModel.save_pretrained")


def source_sha256(path: Path) -> str:
    """The SHA-256 of what was imported: the file, or an adapter directory's weights file."""
    return art.sha256_file(adapter_weights(path) if (path / ADAPTER_CONFIG).is_file() else path)


def load_adapter(path: Path, arch: str, base: str | None, classes: int):
    """``arch`` with its ``base`` weights and a head of ``classes`` outputs, the peft LoRA adapter at ``path`` loaded
    on it and merged into the weights; (the plain model, its class count). An adapter that does not carry the head
    (``modules_to_save``) over a base whose head does not have ``classes`` outputs is refused: the head would be
    untrained."""
    import json

    from edgeft.models import create, read_state_dict
    from edgeft.runtime.torch_model import head_of, torchvision_name

    if torchvision_name(arch) is not None:
        raise ConfigError(f"a peft adapter is imported over a timm model; for {arch} merge it yourself "
                          "(merge_and_unload) and import the checkpoint")
    try:
        import peft
    except ImportError:
        raise DependencyError("importing a LoRA adapter needs peft: pip install 'edgeft[lora]'") from None
    config = json.loads((path / ADAPTER_CONFIG).read_text())
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise ModelError(f"{path} is a peft {config.get('peft_type')} adapter; edgeft imports LoRA adapters")
    weights = adapter_weights(path)
    keys = list(read_state_dict(weights)) if weights.suffix == ".bin" else list(_safetensors_keys(weights))
    model, _ = create(arch, weights=base or "auto", num_classes=classes)
    head = next(name for name, m in model.named_modules() if m is head_of(model))
    if not any(f".{head}.weight" in k or k.endswith(f"{head}.weight") for k in keys):
        base_rows = create(arch, weights=base or "auto")[0]
        if head_of(base_rows).weight.shape[0] != classes:
            raise ModelError(f"the adapter {path.name} does not carry the {head} head (peft's modules_to_save) and the "
                             f"base weights' head has {head_of(base_rows).weight.shape[0]} outputs, not {classes}: pass "
                             "--base the fine-tuned checkpoint whose head it adapts, or save the adapter with "
                             f"modules_to_save=[\"{head}\"]")
        model = base_rows
    try:
        merged = peft.PeftModel.from_pretrained(model, str(path), is_trainable=False).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:300]
        raise ModelError(f"the adapter {path.name} does not fit {arch} with base {base or 'auto'}: {first}; check "
                         "--model and --base name what it was trained on") from None
    return merged.eval(), classes


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def _closest_hint(arch: str, sd: dict) -> str:
    fit = closest_arch(arch, sd)
    return (f"its keys fit {fit}: pass --model {fit}" if fit
            else "check --model names the architecture the checkpoint was saved from")


def default_contract(arch: str) -> InputContract:
    """The preprocessing an architecture is registered with: timm's config, torchvision's ImageNet recipe."""
    from edgeft.runtime.torch_model import torchvision_name

    if torchvision_name(arch) is not None:
        return InputContract(size=(224, 224), resize="shorter_side_center_crop", crop_pct=0.875,
                             interpolation="bilinear")
    from edgeft.models import default_contract as timm_contract

    return timm_contract(arch)


# ------------------------------------------------------------------------------------------------ ONNX

def read_onnx(path: Path) -> tuple[Any, dict[str, Any], int | None, dict[str, Any] | None]:
    """(model, contract fields read from its single input, output class count, edgeft metadata if it has any)."""
    import json

    import onnx

    from edgeft.runtime.runner import ONNX_META_KEY

    try:
        m = onnx.load(str(path))
    except Exception as e:
        raise ModelError(f"cannot read ONNX file {path}: {str(e).splitlines()[0][:200]}") from None
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(f"{path.name} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); edgeft imports "
                         "classifiers with one image input (N, C, H, W)")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ModelError(f"{path.name}'s input {inputs[0].name} has {len(dims)} dimensions; edgeft imports image "
                         "classifiers with an (N, C, H, W) input")
    read: dict[str, Any] = {}
    if dims[1] in (1, 3):
        read["channels"] = dims[1]
    if dims[2] and dims[3]:
        read["size"] = [dims[2], dims[3]]
    out_dims = [d.dim_value if d.HasField("dim_value") else None for d in m.graph.output[0].type.tensor_type.shape.dim]
    classes = out_dims[1] if len(out_dims) == 2 and out_dims[1] else None
    meta = next((json.loads(p.value) for p in m.metadata_props if p.key == ONNX_META_KEY), None)
    return m, read, classes, meta


# ------------------------------------------------------------------------------------------------ the stage

def declared_contract(cfg: ImportConfig, base: InputContract, read: dict[str, Any] | None = None
                      ) -> InputContract:
    """``base`` (a model's registered preprocessing) with what the file says (``read``) and what the user declared
    (``cfg.input``) over it, the user's last."""
    read = read or {}
    fields = dict(cfg.input)
    if "size" in fields and isinstance(fields["size"], int):
        fields["size"] = [fields["size"], fields["size"]]
    if "size" not in fields and "size" in read:
        fields["size"] = read["size"]
    if "color" not in fields and read.get("channels") == 1:
        fields["color"] = "GRAY"
        fields.setdefault("mean", [base.mean[0]])
        fields.setdefault("std", [base.std[0]])
    unknown = set(fields) - set(InputContract.__dataclass_fields__)
    if unknown:
        bad = sorted(unknown)[0]
        known = InputContract.__dataclass_fields__
        raise ConfigError(f"import.input: unknown field {bad!r}{close_matches(bad, known)}")
    return base.replace(**fields) if fields else base


def _onnx_model(cfg: ImportConfig, source: Path, task: Any, given: list[str] | None, data_classes: list[str] | None
                ) -> tuple[Any, InputContract, list[str] | None, int | None, dict[str, Any]]:
    """An ONNX file as its task's graph: (model, contract, class names, output count, what ``meta.extra`` records)."""
    model, read, outputs, onnx_meta = read_onnx(source)
    base = InputContract.from_dict(onnx_meta["input"]) if onnx_meta and "input" in onnx_meta else InputContract()
    if "size" not in read and "size" not in cfg.input and not (onnx_meta and "input" in onnx_meta):
        raise ConfigError(f"{source.name} has a dynamic input height or width; declare the size the model was "
                          "trained at (--size HxW, or import.input.size: [H, W])")
    contract = declared_contract(cfg, base, read)
    if read.get("channels") and read["channels"] != contract.channels:
        raise ConfigError(f"{source.name} takes {read['channels']} channel(s), but the contract's color "
                          f"{contract.color} gives {contract.channels}; declare --color "
                          f"{'GRAY' if read['channels'] == 1 else 'RGB or BGR'}")
    names = given or (list(onnx_meta["class_names"]) if onnx_meta and "class_names" in onnx_meta else None) \
        or data_classes
    extra: dict[str, Any] = {}
    if names is not None:  # a task whose graph needs more than the file (a detector's NMS) adds it
        model, extra = task.adopt_onnx(model, names, contract, cfg.layout)
    return model, contract, names, outputs, extra


def import_model(cfg: ImportConfig, out: str | os.PathLike, data: str | os.PathLike | None = None,
                 force: bool = False) -> art.Artifact:
    """Write the user's model at ``out`` as an artifact (``torch`` for a checkpoint, ``onnx`` for an ONNX file) with
    its contract, class names, where it came from (file and SHA-256) and, with ``data``, its baseline metrics."""
    from edgeft.tasks import registry as tasks

    out = art.refuse_existing(out, force)
    cfg.check()
    task = tasks.get(cfg.task)
    source = Path(cfg.model)
    data = Path(data) if data is not None else None
    given = class_list(cfg.classes)
    data_classes = task.data_classes(data) if data is not None else None
    extra: dict[str, Any] = {}  # what meta.extra records of the model (an ONNX detector: its task and NMS settings)
    if not cfg.is_onnx and not task.imports_checkpoints:
        raise ConfigError(f"import: a {task.name} model is imported as an ONNX file; checkpoints are imported as "
                          "classifiers or torchvision detectors")
    if cfg.trainable_blocks is not None and task.name != "classify":
        raise ConfigError("import.trainable_blocks names a classifier's blocks for partial retraining; leave it out")

    if cfg.is_onnx:
        model, contract, names, outputs, extra = _onnx_model(cfg, source, task, given, data_classes)
        arch, kind, fmt = f"onnx:{source.stem}", "onnx", "onnx" + (f" ({cfg.layout} layout)" if cfg.layout else "")
    elif cfg.is_adapter:
        names = given or data_classes
        if names is None:
            raise ConfigError(f"import.classes: no class names for the adapter {source.name}; pass --classes (in the "
                              "model's output order) or --data whose train/ folders are the model's classes")
        model, outputs = load_adapter(source, cfg.arch, cfg.base, len(names))
        contract = declared_contract(cfg, default_contract(cfg.arch))
        arch, kind, fmt = cfg.arch, "torch", "peft LoRA adapter (merged)"
    else:
        names = given or data_classes
        model, outputs, contract, fmt, extra = task.import_checkpoint(cfg, source, names)
        arch, kind = cfg.arch, "torch"
    if kind == "torch" and cfg.trainable_blocks is not None:
        from edgeft.training.split import block_count

        n = block_count(model, cfg.arch)
        if cfg.trainable_blocks > n:
            raise ConfigError(f"import.trainable_blocks {cfg.trainable_blocks} is more than the {n} blocks "
                              f"{cfg.arch} has")
    if names is None:
        raise ConfigError(f"import.classes: no class names for {source.name}; pass --classes (in the model's output "
                          "order) or --data whose train/ folders are the model's classes")
    if outputs is not None and outputs != len(names):
        raise DataError(f"{source.name} has {outputs} outputs but {len(names)} class names ({', '.join(names)}); "
                        + ("the data's classes differ from the model's: import with --data that has the model's classes"
                           if names is data_classes else "give one name per output, in the model's output order"))
    if data_classes is not None and sorted(data_classes) != sorted(names):
        raise DataError(f"the data's classes {data_classes} differ from the model's {names}; use data with the "
                        "model's classes (their order may differ; the model's order is kept)")

    progress.info(f"import {fmt} {source.name}: {arch}, {len(names)} classes ({', '.join(names)}); input "
                  f"{contract.size[0]}x{contract.size[1]} {contract.color}, {contract.resize}"
                  f"{f' (crop {contract.crop_pct})' if contract.resize != 'stretch' else ''}, "
                  f"{contract.interpolation}, "
                  f"mean {list(contract.mean)}, std {list(contract.std)}"
                  + (f", roi {list(contract.roi)}" if contract.roi else "")
                  + (f", window {contract.window}" if contract.window else ""))
    params = {**cfg.to_dict(), "format": fmt, "source_sha256": source_sha256(source),
              "data": str(data) if data else None}
    meta = art.Meta(kind=kind, arch=arch, class_names=names, input=contract,
                    lineage=[art.lineage_entry("import", params)], extra=extra)
    with art.staging_dir(out, force=force) as tmp:
        _write_model(model, meta, tmp / meta.model_file)
        meta.model_sha256 = art.sha256_file(tmp / meta.model_file)
        meta.versions = art.library_versions()
        if data is not None:
            meta.metrics = baseline(task, art.Artifact(path=tmp, meta=meta), data, cfg.splits)
        art.write_json(tmp / art.META_FILE, meta.to_dict())
    return art.Artifact(path=out, meta=meta)


def _write_model(model: Any, meta: art.Meta, path: Path) -> None:
    if meta.kind == "torch":
        import torch

        torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path)
        return
    import onnx

    from edgeft.models.onnx import onnx_metadata
    from edgeft.runtime.runner import ONNX_META_KEY

    kept = [p for p in model.metadata_props if p.key != ONNX_META_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=ONNX_META_KEY, value=onnx_metadata(meta))
    onnx.save(model, str(path))


def baseline(task: Any, artifact: art.Artifact, data: Path, splits: list[str]) -> dict[str, Any]:
    """The imported model's metrics on the data's splits, measured as the camera runs it: what later gates compare
    against."""
    found = task.splits(data)
    metrics: dict[str, Any] = {}
    for split in splits:
        if split not in found:
            if split == "val":
                raise DataError(f"{data} has no val split; the imported model's baseline is measured on val")
            continue
        m = task.evaluate(artifact, data, split)
        metrics[split] = m.to_dict()
        progress.info(f"baseline on {split}: {task.eval_text(m, artifact, split)}")
    metrics["eval_split"] = "test" if "test" in metrics else "val"
    return metrics
