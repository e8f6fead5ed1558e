"""One turn of the retraining loop on ELPV, staged as a plant would live it, printing JSON.

A line ran monocrystalline cells only and deployed a model fine-tuned on them (examples/loop/mono.yaml). Then it
switched to polycrystalline cells: the station (`edgeft infer --product poly --save reject,review`, a share of passes
kept for audit) judged the poly cells of ELPV's train and val splits, a person labelled what it kept (here: the
cells' real grades from the data set), `edgeft data collect` added them to the data (train, val and a new test slice;
their product, poly, into its products.csv, the old cells mono), and examples/loop/retrain.yaml fine-tuned the
deployed model again, compressed it the same way and judged it against the deployed one (exit 0 promote, 1 keep, 3
inconclusive). ELPV's poly test cells, which the station never saw, are reported beside (promote.also). The same loop
with the labels of the new training parts shuffled (a careless labelling) must not promote.

    python benchmarks/retrain_loop.py [--skip-mono] [--skip-station] [--seed S]
        (about 30 minutes on 2 cores; runs/loop/; --seed S: another draw of the collected parts' splits and of the
        fine-tuning, into runs/loop/*-sS and data/loop/line*-sS)
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from edgeft.host import cpu_model

ROOT = Path(__file__).resolve().parents[1]
EDGEFT = [sys.executable, "-m", "edgeft"]
DATA, RUNS = ROOT / "data" / "loop", ROOT / "runs" / "loop"


def sh(*args, ok=(0,)) -> int:
    print("$ edgeft " + " ".join(map(str, args)), file=sys.stderr, flush=True)
    rc = subprocess.run([*EDGEFT, *map(str, args)], cwd=ROOT, stdout=sys.stderr).returncode  # stdout: the JSON only
    if rc not in ok:
        raise SystemExit(f"edgeft {' '.join(map(str, args))} exited {rc}")
    return rc


def stage_data() -> dict[str, str]:
    """data/loop/mono (train/val/test of mono cells), poly-line (poly train+val cells: what the station sees) and
    poly-test (poly test cells: never seen), copied from data/elpv by its split.csv; returns file -> class."""
    src = ROOT / "data" / "elpv"
    if not (src / "split.csv").is_file():
        sh("data", "elpv", src)
    rows = list(csv.DictReader(open(src / "split.csv")))
    if not (DATA / "mono").is_dir():
        for r in rows:
            if r["cell_type"] == "mono":
                d = DATA / "mono" / r["split"] / r["class"]
            elif r["split"] == "test":
                d = DATA / "poly-test" / "test" / r["class"]
            else:
                d = DATA / "poly-line"
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / r["split"] / r["class"] / r["file"], d / r["file"])
    return {r["file"]: r["class"] for r in rows}


def label_csv(kept: Path, grades: dict[str, str], out: Path) -> int:
    """The person's labels: each kept frame's cell (its sidecar's source) and its real grade."""
    rows = []
    for side in sorted(kept.rglob("*.json")):
        source = Path(json.loads(side.read_text())["source"]).name
        rows.append([f"{side.parent.name}/{side.stem}", grades[source]])
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows([["part", "label"], *rows])
    return len(rows)


def shuffle_train_labels(data: Path, seed: int = 0) -> int:
    """A careless labelling: the collected training parts' labels permuted among themselves (files moved between the
    class folders); val and the new test slice keep the real grades, so the comparison stays honest."""
    recs = [json.loads(x) for x in (data / "collected.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["split"] == "train"]
    labels = [r["label"] for r in train]
    random.Random(seed).shuffle(labels)
    moved = 0
    for r, lab in zip(train, labels):
        if lab != r["label"]:
            src = data / r["file"]
            dst = data / "train" / lab / src.name
            src.rename(dst)
            moved += 1
    return moved


def first_stage_seconds(run: Path) -> float:
    steps = json.loads((run / "pipeline.json").read_text())["steps"]
    return next(v["seconds"] for k, v in steps.items() if k.startswith("01-"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-mono", action="store_true", help="reuse runs/loop/mono")
    ap.add_argument("--skip-station", action="store_true", help="reuse runs/loop/kept (the station's kept frames)")
    ap.add_argument("--seed", type=int, default=0, help="the collect split's and the fine-tuning's seed")
    args = ap.parse_args()
    tag = f"-s{args.seed}" if args.seed else ""
    t0 = time.time()
    grades = stage_data()
    (DATA / "poly-test" / "test" / "products.csv").write_text("pattern,product\n*,poly\n")
    if not args.skip_mono:
        sh("optimize", "examples/loop/mono.yaml", "--out", RUNS / "mono", "--force")
    deployed = RUNS / "mono" / "03-quantize"
    kept = RUNS / "kept"
    if not args.skip_station:
        shutil.rmtree(kept, ignore_errors=True)
        sh("-q", "infer", deployed, DATA / "poly-line", "--source-name", "line2", "--product", "poly", "--save",
           "reject,review", kept, "--save-pass-share", "0.2", "--out", RUNS / "station.jsonl")
    n_kept = label_csv(kept, grades, RUNS / "labels.csv")
    decisions = [json.loads(x)["decision"] for x in (RUNS / "station.jsonl").read_text().splitlines() if '"decision"' in x]
    line, shuffled = DATA / f"line{tag}", DATA / f"line-shuffled{tag}"
    for d in (line, shuffled):
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(DATA / "mono", d)
        (d / "products.csv").write_text("pattern,product\n*,mono\n")  # collect puts the kept poly cells ahead
        sh("-q", "data", "collect", kept, "--into", d, "--labels", RUNS / "labels.csv", "--test-share", "0.3",
           "--val-share", "0.2", "--seed", args.seed)
    moved = shuffle_train_labels(shuffled, args.seed)
    runs = {}
    for name, data in ((f"retrain{tag}", line), (f"retrain-shuffled{tag}", shuffled)):
        models = RUNS / f"models{name.removeprefix('retrain')}"
        shutil.rmtree(models, ignore_errors=True)
        runs[name] = sh("optimize", "examples/loop/retrain.yaml", "--out", RUNS / name, "--force", "--set",
                        f"data={data}", "--set", f"promote.into={models}", "--set", f"finetune.seed={args.seed}",
                        ok=(0, 1, 3))

    def slices(run: Path) -> dict:
        doc = json.loads((run / "promotion" / "promotion.json").read_text())
        out = {"verdict": doc["verdict"], "exit_code": doc["exit_code"], "reason": doc["reason"],
               "latency": {k: doc["latency"].get(k) for k in ("verdict", "ratio", "interval", "rounds")}
               if doc["latency"] else None, "installed": doc["installed"], "thresholds": doc["thresholds"],
               "notes": doc["notes"]}
        for s in doc["slices"]:
            out[s["name"]] = {"n_defective": s["n_defective"], "n_good": s["n_good"],
                              **{side: {k: round(s[side][k], 4) for k in ("recall", "false_reject", "auroc")}
                                 | {"recall_interval": [round(v, 4) for v in s[side]["recall_interval"]],
                                    "false_reject_interval": [round(v, 4) for v in s[side]["false_reject_interval"]]}
                                 for side in ("deployed", "candidate")},
                              "changes": {k: {kk: round(vv, 4) for kk, vv in v.items()} for k, v in s["changes"].items()},
                              "flips": {k: len(v) for k, v in s["flips"].items()}}
        return out

    cpu = cpu_model()
    print(json.dumps({
        "cpu": cpu, "station": {"cells": len(decisions), "decisions": {d: decisions.count(d) for d in set(decisions)},
                                "kept": n_kept},
        "seed": args.seed,
        "collected": Counter(json.loads(x)["split"] for x in (line / "collected.jsonl").read_text().splitlines()),
        "shuffled_train_labels_moved": moved,
        "finetune_seconds": {"original_mono": first_stage_seconds(RUNS / "mono"),
                             **{name: first_stage_seconds(RUNS / name) for name in runs}},
        **{name: {"exit_code": rc, **slices(RUNS / name)} for name, rc in runs.items()},
        "wall_s": round(time.time() - t0, 1)}, indent=1))


if __name__ == "__main__":
    main()
