"""Does keeping the evidence slow the station? Throughput of ``edgeft infer`` on one stream with ``--save
reject,review DIR`` against without, paired: each round runs both (in alternating order) on the same video of real
parts, in this process, on the same model session; the ratio per round is frames/s with saving over frames/s
without. Prints JSON: the median ratio of the rounds and its range, frames kept and skipped.

    python benchmarks/station_evidence.py --model ARTIFACT_WITH_POLICY --data data/elpv [--rounds 15]

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


def make_video(data: Path, out: Path, frames: int) -> Path:
    import cv2

    paths = sorted(p for p in (data / "test").rglob("*") if p.suffix.lower() in (".png", ".jpg"))[:frames]
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


def run_once(predictor, video: Path, folder: Path | None) -> tuple[float, int, dict]:
    from edgeft.redact import resolve
    from edgeft.station.evidence import EvidenceConfig, EvidenceKeeper
    from edgeft.station.streams import Station, Stream
    from edgeft.station.swap import ModelSlot

    keeper = EvidenceKeeper(EvidenceConfig(folder, ("reject", "review"), 4096.0)) if folder is not None else None
    station = Station(ModelSlot(predictor, lambda p: None), [Stream(resolve(str(video)))], io.StringIO(),
                      evidence=keeper)
    t0 = time.perf_counter()
    stats = station.run()
    seconds = time.perf_counter() - t0
    counters = keeper.counters() if keeper is not None else {}
    if keeper is not None:
        keeper.close()  # the writer's backlog is written after the timed run: what the loop paid is what is timed
    return seconds, next(iter(stats.values())).frames, counters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    from edgeft.host import cpu_model
    from edgeft.runtime import Predictor

    predictor = Predictor(args.model, threads=args.threads)
    ratios, kept, skipped, fps_without = [], 0, 0, []
    with tempfile.TemporaryDirectory() as tmp:
        video = make_video(args.data, Path(tmp) / "line", args.frames)
        run_once(predictor, video, None)  # warm-up: the session, the decoder, the page cache
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            rates = {}
            for save in order:
                folder = Path(tmp) / f"kept-{r}" if save else None
                seconds, frames, counters = run_once(predictor, video, folder)
                rates[save] = frames / seconds
                if save:
                    kept += counters["kept"]
                    skipped += counters["skipped"]
            ratios.append(rates[True] / rates[False])
            fps_without.append(rates[False])
    predictor.close()
    print(json.dumps({
        "what": "frames/s with --save reject,review over frames/s without, per paired round",
        "median_ratio": round(statistics.median(ratios), 4), "min": round(min(ratios), 4),
        "max": round(max(ratios), 4), "rounds": len(ratios), "frames_per_run": args.frames,
        "fps_without_median": round(statistics.median(fps_without), 1),
        "kept_frames_per_run": kept // len(ratios), "skipped_frames": skipped,
        "model": str(args.model), "backend": "auto", "cpu": cpu_model(), "machine": platform.machine(),
    }, indent=1))


if __name__ == "__main__":
    main()
