"""Does keeping the evidence slow the station? Throughput of ``edgeft infer`` on one stream with ``--save
reject,review DIR`` against without, paired: each round runs both (in alternating order) on the same video of real
parts, in this process, on the same model session; the ratio per round is frames/s with saving over frames/s
without. Prints JSON: the median ratio of the rounds and its range, frames kept and skipped.

    python benchmarks/station_evidence.py --model ARTIFACT_WITH_POLICY --data data/elpv [--rounds 15]
        [--defect-share 0.05] [--kinds reject]

The video is the test split's images (real cells: defective ones are rejected or reviewed, so PNGs are written at
the rate the line's defects give), encoded losslessly once (FFV1 when OpenCV has it, else MJPG).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path


def make_video(data: Path, out: Path, frames: int, defect_share: float | None, positive: str) -> Path:
    """The test split's parts as a video: in their folders' order, or ``defect_share`` of them from the positive
    class's folder, shuffled (a line's mix)."""
    import random

    import cv2

    paths = sorted(p for p in (data / "test").rglob("*") if p.suffix.lower() in (".png", ".jpg"))
    if defect_share is not None:
        bad = [p for p in paths if p.parent.name == positive]
        good = [p for p in paths if p.parent.name != positive]
        n_bad = round(frames * defect_share)
        rng = random.Random(0)
        paths = rng.sample(bad, min(n_bad, len(bad))) + rng.sample(good, min(frames - n_bad, len(good)))
        rng.shuffle(paths)
    paths = paths[:frames]
    first = cv2.imread(str(paths[0]))
    h, w = first.shape[:2]
    for fourcc, suffix in (("FFV1", ".mkv"), ("MJPG", ".avi")):
        path = out.with_suffix(suffix)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (w, h))
        if writer.isOpened():
            for p in paths:
                writer.write(cv2.resize(cv2.imread(str(p)), (w, h)))
            writer.release()
            return path
    raise SystemExit("OpenCV can write neither FFV1 nor MJPG here")


def run_once(predictor, video: Path, folder: Path | None, kinds: tuple[str, ...] = ("reject", "review")
             ) -> tuple[float, int, dict]:
    from edgeft.redact import resolve
    from edgeft.station.evidence import EvidenceConfig, EvidenceKeeper
    from edgeft.station.streams import Station, Stream
    from edgeft.station.swap import ModelSlot

    keeper = EvidenceKeeper(EvidenceConfig(folder, kinds, 4096.0)) if folder is not None else None
    station = Station(ModelSlot(predictor, lambda p: None), [Stream(resolve(str(video)))], io.StringIO(),
                      evidence=keeper)
    t0 = time.perf_counter()
    stats = station.run()
    seconds = time.perf_counter() - t0
    counters = keeper.counters() if keeper is not None else {}
    if keeper is not None:
        keeper.close()  # the writer's backlog is written after the timed run: what the loop paid is what is timed
    return seconds, next(iter(stats.values())).frames, counters


def write_cost_ms(predictor, video: Path, folder: Path, frames: int = 200) -> float:
    """CPU milliseconds the evidence writer spends on one kept frame (PNG and sidecar), on this disk, alone: the
    video's frames written one after another by the keeper's own write, nothing else running."""
    import cv2

    from edgeft.station.evidence import EvidenceConfig, EvidenceKeeper

    cap, images = cv2.VideoCapture(str(video)), []
    while len(images) < frames:
        ok, img = cap.read()
        if not ok:
            break
        images.append(img)
    cap.release()
    keeper = EvidenceKeeper(EvidenceConfig(folder, ("reject",), 4096.0))
    line = {"source": "bench", "label": "defective", "score": 0.9, "probabilities": [0.9, 0.1], "decision": "reject",
            "not_ok": 0.9}
    t0 = time.process_time()
    for i, img in enumerate(images):
        keeper._write("bench", img, {**line, "frame": i, "timestamp": time.time()}, predictor.policy, "bench")
    ms = (time.process_time() - t0) * 1000 / len(images)
    keeper.close()
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--defect-share", type=float, default=None,
                    help="This share of the frames from the positive class's folder, the rest good, shuffled "
                         "(default: the split's folders in order)")
    ap.add_argument("--positive", default="defective")
    ap.add_argument("--kinds", default="reject,review", help="What --save keeps.")
    ap.add_argument("--dir", type=Path, default=Path("."),
                    help="Where the video and the kept frames go (the disk a station writes its evidence to)")
    args = ap.parse_args()
    kinds = tuple(args.kinds.split(","))

    from edgeft.bench.harness import reference_workload_ms
    from edgeft.host import cpu_model
    from edgeft.runtime import Predictor

    ref = [reference_workload_ms()]

    predictor = Predictor(args.model, threads=args.threads)
    ratios, kept, skipped, fps_without = [], 0, 0, []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix=".station-evidence-") as tmp:
        video = make_video(args.data, Path(tmp) / "line", args.frames, args.defect_share, args.positive)
        write_ms = write_cost_ms(predictor, video, Path(tmp) / "write-cost")
        run_once(predictor, video, None)  # warm-up: the session, the decoder, the page cache
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            rates = {}
            for save in order:
                folder = Path(tmp) / f"kept-{r}" if save else None
                seconds, frames, counters = run_once(predictor, video, folder, kinds)
                rates[save] = frames / seconds
                if save:
                    kept += counters["kept"]
                    skipped += counters["skipped"]
            ratios.append(rates[True] / rates[False])
            fps_without.append(rates[False])
    predictor.close()
    ref.append(reference_workload_ms())
    print(json.dumps({
        "what": f"frames/s with --save {args.kinds} over frames/s without, per paired round",
        "median_ratio": round(statistics.median(ratios), 4), "min": round(min(ratios), 4),
        "max": round(max(ratios), 4), "rounds": len(ratios), "frames_per_run": args.frames,
        "fps_without_median": round(statistics.median(fps_without), 1),
        "write_cpu_ms_per_kept_frame": round(write_ms, 3),
        "kept_frames_per_run": kept // len(ratios), "kept_share": round(kept / len(ratios) / args.frames, 3),
        "skipped_frames": skipped, "defect_share": args.defect_share,
        "model": str(args.model), "backend": "auto", "cpu": cpu_model(), "machine": platform.machine(),
        "dir": str(args.dir.resolve()),
        "reference_workload_ms_before_after": [round(v, 4) for v in ref],
    }, indent=1))


if __name__ == "__main__":
    main()
