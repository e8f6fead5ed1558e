"""The anomaly graph: image -> backbone patch features -> each patch's distance to the good parts -> a heatmap and a
score (its maximum). One torch module serves fitting, evaluation, the torch runner and the ONNX export, so the
camera runs exactly the graph that was measured.

Two ways to say how far a patch is from the good parts, both as plain tensor ops that ONNX Runtime, OpenVINO and
TensorRT run (no custom op, no k-NN library):

- ``padim``: a Gaussian per map position (mean and inverse covariance of the good parts' features there): the
  Mahalanobis distance, one batched matrix product. Suits parts that sit in the same place in every frame
  (solar cells, stamped parts in a fixture); its size does not grow with the number of good images.
- ``patchcore``: a memory bank of good patch features (a greedy coreset of them): the Euclidean distance to the
  nearest bank entry, computed chunk by chunk over the bank as matrix products with a running minimum, so memory
  is bounded by the chunk for any bank size (the exports that ran out of memory held the whole distance matrix).

Features: timm's feature levels (``layers``, e.g. 2 and 3 of EfficientNet-Lite0: strides 8 and 16), each averaged
over a ``pool`` x ``pool`` neighbourhood and brought to one ``grid`` (average-pooled down or bilinearly up), then
concatenated; optionally a random subset of the channels is kept (``keep``: PaDiM's reduction, which shrinks the
statistics by the square of the share kept). The backbone is cut after the deepest level used (timm's ``prune_intermediate_layers``).

Storage (``storage``): the bulk of the statistics (padim's inverse covariances, patchcore's bank) is held in FP32 or
FP16. FP16 halves the artifact and the exported file; the graph casts it to FP32 before the distances (a Cast of a
constant, which ONNX Runtime folds once when the session is made), so the arithmetic stays FP32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from edgeft.errors import ArtifactError, ConfigError
from edgeft.metrics import ANOMALOUS  # noqa: F401 (the positive class: class_names = [good class, ANOMALOUS])

if TYPE_CHECKING:  # pragma: no cover
    import torch.nn as nn

METHODS = ("padim", "patchcore")
STORAGES = ("fp32", "fp16")  # how the bulk of the statistics is stored (the distances are computed in FP32 either way)
OUTPUTS = ("score", "heatmap")  # the exported graph's output names: (N,) and (N, 1, grid_h, grid_w)


@dataclass
class AnomalySpec:
    """What an anomaly artifact's graph is, beside its weights (``meta.extra["anomaly"]``)."""

    method: str
    layers: list[int]
    channels: list[int]  # per feature level, as the backbone gives them
    grid: list[int]  # (h, w) of the heatmap
    sizes: list[list[int]] = field(default_factory=list)  # (h, w) of each level's map at the contract's input size
    keep: list[int] | None = None  # the feature channels kept (a random subset, as PaDiM reduces); None: all
    pool: int = 3
    bank_size: int = 0  # patchcore: bank entries
    chunk: int = 4096  # patchcore: bank entries per matrix product
    good_class: str = "good"
    map_floor: float = 0.0  # a typical good patch's distance (median over val's good images): the heatmap's blue
    map_ceiling: float = 1.0  # the highest good val score: the heatmap's red where no policy gives a threshold
    storage: str = "fp32"  # inv_cov / bank as stored (STORAGES); artifacts from before it are FP32
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return len(self.keep) if self.keep else sum(self.channels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "extra.anomaly") -> "AnomalySpec":
        try:
            spec = cls(**d)
        except TypeError as e:
            raise ArtifactError(f"{where} is not an anomaly spec this edgeft reads ({e}); fit the model again with "
                                "`edgeft anomaly`") from None
        if spec.method not in METHODS:
            raise ArtifactError(f"{where}.method {spec.method!r} is not one of {', '.join(METHODS)}")
        if spec.storage not in STORAGES:
            raise ArtifactError(f"{where}.storage {spec.storage!r} is not one of {', '.join(STORAGES)}")
        if len(spec.sizes) != len(spec.layers) or len(spec.channels) != len(spec.layers) or len(spec.grid) != 2:
            raise ArtifactError(f"{where} is damaged (its layers, channels, sizes and grid do not match); fit the "
                                "model again with `edgeft anomaly`")
        return spec


def feature_levels(backbone: "nn.Module") -> list[dict[str, Any]]:
    """timm's feature levels of ``backbone``: module name, channels and stride of each."""
    info = getattr(backbone, "feature_info", None)
    if not info:
        raise ConfigError(f"{type(backbone).__name__} reports no feature levels (timm feature_info); choose a timm "
                          "CNN such as efficientnet_lite0")
    return [{"module": f["module"], "num_chs": int(f["num_chs"]), "reduction": int(f["reduction"])} for f in info]


def check_layers(backbone: "nn.Module", layers: list[int], arch: str) -> list[dict[str, Any]]:
    """The levels ``layers`` name; one line naming what the backbone has when one is not there."""
    levels = feature_levels(backbone)
    have = ", ".join(f"{i} ({f['module']}: {f['num_chs']} channels, stride {f['reduction']})"
                     for i, f in enumerate(levels))
    if not layers:
        raise ConfigError(f"anomaly.layers is empty; name feature levels of {arch}: {have}")
    bad = [i for i in layers if not isinstance(i, int) or i < 0 or i >= len(levels)]
    if bad or len(set(layers)) != len(layers) or list(layers) != sorted(layers):
        raise ConfigError(f"anomaly.layers {list(layers)}: {arch} has the feature levels {have}; name distinct "
                          "ones, in increasing order (e.g. 2,3)")
    return [levels[i] for i in layers]


def cut_backbone(backbone: "nn.Module", layers: list[int]) -> "nn.Module":
    """Drop everything after the deepest level used (blocks and head): less to run, store and export."""
    backbone.prune_intermediate_layers(list(layers), prune_head=True)
    return backbone


def _module():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class PatchFeatures(nn.Module):
        """Backbone levels -> neighbourhood-averaged, resized to one grid, concatenated: (N, D, gh, gw)."""

        def __init__(self, backbone: nn.Module, spec: AnomalySpec):
            super().__init__()
            self.backbone = backbone
            self.layers = list(spec.layers)
            self.pool = int(spec.pool)
            self.grid = (int(spec.grid[0]), int(spec.grid[1]))
            # the levels' sizes as plain numbers (from the fit's probe), so the export traces no shape arithmetic
            self.sizes = [(int(h), int(w)) for h, w in spec.sizes]
            self.keep = torch.tensor(spec.keep, dtype=torch.long) if spec.keep else None  # a constant of the graph

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            maps = self.backbone.forward_intermediates(x, indices=self.layers, intermediates_only=True,
                                                       stop_early=True)
            out = []
            for f, (h, w) in zip(maps, self.sizes):
                if self.pool > 1:
                    f = F.avg_pool2d(f, self.pool, stride=1, padding=self.pool // 2, count_include_pad=False)
                if (h, w) != self.grid:
                    if h >= self.grid[0] and h % self.grid[0] == 0 and w % self.grid[1] == 0:
                        f = F.avg_pool2d(f, (h // self.grid[0], w // self.grid[1]))
                    else:
                        f = F.interpolate(f, size=self.grid, mode="bilinear", align_corners=False)
                out.append(f)
            f = torch.cat(out, 1)
            return f if self.keep is None else f.index_select(1, self.keep)

    class AnomalyGraph(nn.Module):
        """(N, C, H, W) image -> (score (N,), heatmap (N, 1, gh, gw)): each patch's distance to the good parts."""

        def __init__(self, backbone: nn.Module, spec: AnomalySpec):
            super().__init__()
            self.features = PatchFeatures(backbone, spec)
            self.method, self.chunk = spec.method, int(spec.chunk)
            gh, gw = spec.grid
            d = spec.dim
            bulk = bulk_dtype(spec)
            if spec.method == "padim":
                self.register_buffer("mean", torch.zeros(gh * gw, d))
                self.register_buffer("inv_cov", torch.zeros(gh * gw, d, d, dtype=bulk))
            else:
                self.register_buffer("bank", torch.zeros(spec.bank_size, d, dtype=bulk))
                self.register_buffer("bank_sq", torch.zeros(spec.bank_size))  # of the bank as stored

        def distances(self, f: torch.Tensor) -> torch.Tensor:
            """(N, D, gh, gw) patch features -> (N, 1, gh, gw) distances."""
            n, d, gh, gw = f.shape
            if self.method == "padim":
                q = f.flatten(2).permute(2, 0, 1) - self.mean.unsqueeze(1)  # (P, N, D)
                m = (torch.bmm(q, self.inv_cov.float()) * q).sum(-1)  # (P, N): squared Mahalanobis distance
                return m.clamp_min(0).sqrt().transpose(0, 1).reshape(n, 1, gh, gw)
            q = f.permute(0, 2, 3, 1).reshape(n * gh * gw, d)
            q_sq = (q * q).sum(1, keepdim=True)
            best = None
            bank = self.bank.float()  # FP16 storage: one Cast of a constant
            for s in range(0, bank.shape[0], self.chunk):  # unrolled in the export: bounded memory per chunk
                b = bank[s:s + self.chunk]
                d2 = (q_sq - 2 * q @ b.t() + self.bank_sq[s:s + self.chunk].unsqueeze(0)).amin(1)
                best = d2 if best is None else torch.minimum(best, d2)
            return best.clamp_min(0).sqrt().reshape(n, 1, gh, gw)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            heat = self.distances(self.features(x))
            return heat.flatten(1).amax(1), heat

    return PatchFeatures, AnomalyGraph


def bulk_dtype(spec: AnomalySpec):
    """The torch dtype of the statistics' bulk (``inv_cov`` / ``bank``) under ``spec.storage``."""
    import torch

    return torch.float16 if spec.storage == "fp16" else torch.float32


def graph(backbone: "nn.Module", spec: AnomalySpec) -> "nn.Module":
    """An :class:`AnomalyGraph` over an already cut ``backbone`` (its statistics still zero)."""
    return _module()[1](backbone, spec)


def features(backbone: "nn.Module", spec: AnomalySpec) -> "nn.Module":
    """The patch-feature half of the graph alone (what fitting runs over the good images)."""
    return _module()[0](backbone, spec)


def distance_nodes(onnx_path) -> list[str]:
    """The exported graph's nodes that INT8 must leave in FP32: those after the backbone (feature pooling, resizing,
    the distances, the score) and the backbone's last node of each level used, so the features reach the distances
    unrounded (quantized to 8 bits, the level outputs moved scores by several times their spread). The exporter
    names the backbone's nodes by module path (``/features/blocks.0/..``, ``/features/conv_stem/Conv``); the
    patch-feature ops sit directly under ``/features/`` and the distances at the top. ``onnx_path``: a file, or a
    loaded ``onnx.ModelProto``."""
    import onnx

    nodes = list((onnx_path if isinstance(onnx_path, onnx.ModelProto) else onnx.load(str(onnx_path))).graph.node)
    after = [n for n in nodes if not (n.name.startswith("/features/") and n.name.count("/") >= 3)]
    producers = {o: n for n in nodes for o in n.output}
    reads = {i for n in after for i in n.input}
    level_outputs = [producers[i] for i in sorted(reads) if i in producers and producers[i] not in after]
    return [n.name for n in after] + [n.name for n in level_outputs]


def store_statistics(model, storage: str) -> int:
    """Store an exported graph's statistics as ``storage`` says, in place on a loaded ``onnx.ModelProto``; returns
    the bytes saved. With ``fp16``, the constant operand of each distance MatMul (padim's inverse covariances,
    patchcore's bank chunks) becomes an FP16 initializer read through a Cast to FP32. The exporters fold the
    PyTorch graph's own Cast into an FP32 constant, so the file would otherwise carry the FP16 values at twice their
    size: for them this is exact (statistics re-fitted in FP32, as INT8's are, are rounded here). A graph already
    stored so is left as it is."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    if storage != "fp16":
        return 0
    distance = set(distance_nodes(model))
    inits = {i.name: i for i in model.graph.initializer}
    casts, saved = [], 0
    for n in model.graph.node:
        name = n.input[1] if n.op_type in ("MatMul", "Gemm") and n.name in distance and len(n.input) > 1 else None
        init = inits.get(name)
        # not a constant, or stored already (a constant two products read is FP16 after the first: one Cast serves both)
        if init is None or init.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), f"{name}_fp16"))
        casts.append(onnx.helper.make_node("Cast", [f"{name}_fp16"], [name], to=onnx.TensorProto.FLOAT,
                                           name=f"/statistics/Cast_{len(casts)}"))
        saved += values.size * 2
    for k, c in enumerate(casts):
        model.graph.node.insert(k, c)
    return saved
