"""Models fine-tuned outside edgeft, imported and shipped on the real ELPV cells; prints JSON.

  python benchmarks/import_elpv.py --data data/elpv --out runs/import-elpv [--size 128] [--epochs 4]
                                   [--finetuned runs/elpv/01-finetune] [--recover-epochs 3] [--methods ptq qat]
                                   [--target-macs 0.5 0.6 0.7 0.8] [--only timm torchvision onnx]

Three models arrive as a user's own training script would leave them (a plain PyTorch loop below: OpenCV decode,
bilinear resize, the model's mean/std, random flips, AdamW, class-weighted cross-entropy; no edgeft in the loop):

- ``timm``: EfficientNet-Lite0 from the packaged ImageNet weights (the only weights this machine has; edgeft's
  loader reads them, nothing else of edgeft trains), the last blocks and head fine-tuned, saved as a state dict;
- ``torchvision``: torchvision's ``mobilenet_v3_small`` (keys timm cannot load), trained from random weights (no
  torchvision weights are installed), saved as a state dict;
- ``onnx``: the timm model exported by the script with ``torch.onnx.export``.

Each is imported with ``--data`` (its baseline), the script's own predictions compared image by image with the
imported artifact's, then taken through an optimize recipe: checkpoints import -> the search (pruned to 0.5, 0.6,
0.7 or 0.8 of the MACs by default (``--target-macs``), recovered ``--recover-epochs``, INT8 by ``--methods``; the
fastest candidate meeting every gate on val ships) ->
export -> bench -> gates on test; the ONNX file import -> INT8 PTQ -> bench -> gates. With ``--finetuned``
(the demo's 01-finetune), that model's state dict is imported again and compared: logits, and the pruned (no
recovery), exported and INT8 files of both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLASSES = ["defective", "functional"]


def script_split(data: Path, split: str, size: int, mean: list[float], std: list[float]):
    """The user's own preprocessing: every image of a split as (N, 3, size, size) float32 and its labels."""
    import cv2
    import numpy as np

    xs, ys = [], []
    for y, c in enumerate(CLASSES):
        for f in sorted((data / split / c).glob("*.png")):
            g = cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (size, size), interpolation=cv2.INTER_LINEAR)
            g = g.astype(np.float32) / 255.0
            xs.append(np.stack([(g - m) / s for m, s in zip(mean, std)]))
            ys.append(y)
    return np.stack(xs), np.asarray(ys)


def train_outside(model, data: Path, size: int, mean, std, epochs: int, lr: float, trainable=None, seed: int = 0):
    """A plain PyTorch fine-tuning loop; returns the script's predictions and accuracy on val and test."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = script_split(data, "train", size, mean, std)
    params = [p for n, p in model.named_parameters() if trainable is None or trainable(n)]
    for n, p in model.named_parameters():
        p.requires_grad_(trainable is None or trainable(n))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.02)
    weights = torch.tensor(len(y) / (2 * np.bincount(y)), dtype=torch.float32)
    steps = epochs * ((len(y) + 31) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(y))
        for i in range(0, len(y), 32):
            idx = order[i:i + 32]
            xb = torch.from_numpy(x[idx].copy())
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            xb[flip] = xb[flip].flip(-1)
            loss = torch.nn.functional.cross_entropy(model(xb), torch.from_numpy(y[idx]), weight=weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"script epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}", file=sys.stderr)
    model.eval()
    out = {}
    with torch.no_grad():
        for split in ("val", "test"):
            xs, ys = script_split(data, split, size, mean, std)
            pred = torch.cat([model(torch.from_numpy(xs[i:i + 64])) for i in range(0, len(xs), 64)]).argmax(1).numpy()
            out[split] = {"pred": pred.tolist(), "accuracy": float((pred == ys).mean())}
    return out


def edgeft_pred(path: Path, data: Path, split: str) -> list[int]:
    from edgeft import artifact
    from edgeft.data import load_split
    from edgeft.evaluate import logits

    a = artifact.load(path)
    out, _ = logits(a, load_split(data, split, a.meta.input, classes=a.meta.class_names))
    return out.argmax(1).tolist()


def run_recipe(name: str, data: Path, model: Path, arch: str | None, contract: dict, out: Path, threads: int,
               onnx: bool, recover_epochs: int = 3, methods: tuple[str, ...] = ("ptq",),
               target_macs: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8)) -> dict:
    from edgeft.optimize import pipeline
    from edgeft.optimize.recipe import parse

    d = {"name": name, "data": str(data), "threads": threads,
         "import": {"model": str(model), **({"arch": arch} if arch else {}), "input": contract},
         **({} if onnx else {"prune": {"target_macs": 0.5, "importance": "taylor", "steps": 20, "round_to": 8,
                                       "recover_epochs": recover_epochs, "recover_lr": 5e-4},
                             "export": {"parity_images": 32},
                             "search": {"target_macs": list(target_macs), "method": list(methods),
                                        "budget_min": 30}}),
         "quantize": {"calib_images": 256},
         "bench": {"backends": ["ort-cpu"], "rounds": 5},
         "decision": {"positive": ["defective"], "target_recall": 0.95},
         "gates": {"max_accuracy_drop_pp": 2.0, "accuracy_significance": 0.05, "max_recall_drop_pp": 5.0,
                   "max_auroc_drop": 0.02}}
    t = time.time()
    r = pipeline.optimize(parse(d, source=f"{name}.yaml"), out / name, force=True)
    rows = []
    for row in r.rows:
        if row.accuracy is None:
            continue
        dec = row.decisions
        lat = row.latency.get("ort-cpu@1")
        rows.append({"step": row.step, "label": row.label, "accuracy": round(row.accuracy.accuracy, 4),
                     "auroc": round(dec.auroc, 4) if dec and dec.auroc is not None else None,
                     "recall": round(row.policy.recall, 4) if row.policy else None,
                     "false_reject": round(row.policy.false_reject, 4) if row.policy else None,
                     "p50_ms": round(lat["latency_ms"]["p50"], 3) if lat and lat.get("latency_ms") else None})
    pruned = next((row.pruning.fraction for row in r.rows if row.pruning is not None), None)
    return {"gates": {g.gate: g.status for g in r.gates}, "shipped_target_macs": pruned, "rows": rows,
            "wall_s": round(time.time() - t, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/elpv")
    ap.add_argument("--out", default="runs/import-elpv")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--finetuned", default=None, help="the demo's 01-finetune artifact, imported again")
    ap.add_argument("--only", nargs="*", default=["timm", "torchvision", "onnx"])
    ap.add_argument("--recover-epochs", type=int, default=3, help="pruning recovery of every searched candidate")
    ap.add_argument("--methods", nargs="+", default=["ptq"], help="the search's quantization methods (ptq, qat)")
    ap.add_argument("--target-macs", nargs="+", type=float, default=[0.5, 0.6, 0.7, 0.8],
                    help="the search's pruning ratios (fractions of the imported model's MACs)")
    args = ap.parse_args()
    os.environ.setdefault("EDGEFT_QUIET", "1")

    import torch

    from edgeft.host import machine
    from edgeft.importer import ImportConfig, import_model

    torch.set_num_threads(args.threads)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not data.exists():
        from edgeft.data import elpv

        elpv.build(data)
    doc: dict = {"host": machine(), "size": args.size, "epochs": args.epochs, "models": {}}
    s = args.size
    lite0 = {"mean": [0.5] * 3, "std": [0.5] * 3}
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    plans = []
    if {"timm", "onnx"} & set(args.only):
        from edgeft.models import create

        torch.manual_seed(0)
        m, _ = create("efficientnet_lite0", "package:efficientnet_lite0", num_classes=2)
        t = time.time()
        script = train_outside(m, data, s, lite0["mean"], lite0["std"], args.epochs, 2e-3,
                               trainable=lambda n: not n.startswith(("conv_stem", "bn1", "blocks.0", "blocks.1",
                                                                     "blocks.2")))
        train_s = time.time() - t
        torch.save(m.state_dict(), out / "lite0.pth")
        torch.onnx.export(m.eval(), (torch.zeros(1, 3, s, s),), str(out / "lite0.onnx"), opset_version=17,
                          input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "n"}},
                          dynamo=False)
        if "timm" in args.only:
            plans.append(("timm", out / "lite0.pth", "efficientnet_lite0", lite0, script, train_s))
        if "onnx" in args.only:
            plans.append(("onnx", out / "lite0.onnx", None, lite0, script, train_s))
    if "torchvision" in args.only:
        import torchvision

        torch.manual_seed(0)
        m = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=2)
        t = time.time()
        script = train_outside(m, data, s, imagenet["mean"], imagenet["std"], args.epochs * 3, 3e-3)
        torch.save(m.state_dict(), out / "mnv3.pth")
        plans.append(("torchvision", out / "mnv3.pth", "torchvision:mobilenet_v3_small", imagenet, script,
                      time.time() - t))

    for name, model, arch, norm, script, train_s in plans:
        contract = {"size": s, "resize": "stretch", "interpolation": "bilinear", **norm}
        t = time.time()
        imported = import_model(ImportConfig(model=str(model), arch=arch, input=contract, splits=["val", "test"]),
                                out / f"{name}-imported", data=data, force=True)
        import_s = time.time() - t
        same = {split: sum(int(a == b) for a, b in zip(edgeft_pred(imported.path, data, split), script[split]["pred"]))
                for split in ("val", "test")}
        doc["models"][name] = {
            "script_train_s": round(train_s, 1), "import_s": round(import_s, 1),
            "script_accuracy": {k: round(v["accuracy"], 4) for k, v in script.items()},
            "imported_accuracy": {k: round(imported.meta.metrics[k]["accuracy"], 4) for k in ("val", "test")},
            "same_decision": {k: f"{same[k]}/{len(script[k]['pred'])}" for k in same},
            "optimize": run_recipe(name, data, model, arch, contract, out, args.threads, onnx=name == "onnx",
                                   recover_epochs=args.recover_epochs, methods=tuple(args.methods),
                                   target_macs=tuple(args.target_macs))}
        print(json.dumps({name: doc["models"][name]}), file=sys.stderr)

    if args.finetuned:
        doc["roundtrip"] = roundtrip(Path(args.finetuned), data, out, args.threads)
    print(json.dumps(doc, indent=1))


def roundtrip(finetuned: Path, data: Path, out: Path, threads: int) -> dict:
    """The demo's fine-tuned model as a plain state dict, imported again: logits and the downstream files."""
    import numpy as np
    import torch

    from edgeft import artifact
    from edgeft.data import calibration, load_split
    from edgeft.evaluate import logits
    from edgeft.export.stage import export
    from edgeft.importer import ImportConfig, import_model
    from edgeft.prune.config import PruneConfig
    from edgeft.prune.pruner import prune
    from edgeft.quantize.ptq import QuantizeConfig, quantize

    ft = artifact.load(finetuned)
    torch.save(torch.load(ft.model_path, weights_only=True), out / "demo-plain.pth")
    c = ft.meta.input.to_dict()
    c["size"] = list(c["size"])
    c.pop("layout")
    imp = import_model(ImportConfig(model=str(out / "demo-plain.pth"), arch=ft.meta.arch, input=c,
                                    classes=ft.meta.class_names), out / "demo-imported", force=True)
    s = load_split(data, "test", ft.meta.input)
    a, _ = logits(ft, s, backend="torch")
    b, _ = logits(imp, s, backend="torch")
    manifest = calibration.save(calibration.create(data, n=256), out / "calib.json")
    shas = {}
    for name, src in (("ft", ft.path), ("imp", imp.path)):
        prune(src, data, out / f"{name}-p", PruneConfig(target_macs=0.5, recover_epochs=0, threads=threads),
              measure_latency=False, force=True)
        export(out / f"{name}-p", out / f"{name}-x", data=data, force=True)
        quantize(out / f"{name}-x", out / f"{name}-q", QuantizeConfig(auto_exclude=False, threads=threads), manifest,
                 data, force=True)
        shas[name] = [artifact.load(out / f"{name}-{k}").meta.model_sha256 for k in "pxq"]
    return {"test_images": len(s), "max_abs_logit_diff": float(np.abs(a - b).max()),
            "identical": {k: shas["ft"][i] == shas["imp"][i] for i, k in enumerate(("pruned", "onnx", "int8"))}}


if __name__ == "__main__":
    main()
