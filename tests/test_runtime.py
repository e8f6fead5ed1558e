"""The camera path: Predictor and `edgeft infer` on ONNX Runtime, without torch."""

import json
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from edgeft.contract import InputContract
from edgeft.errors import ArtifactError, ConfigError, DependencyError
from edgeft.export.stage import export
from edgeft.redact import resolve
from edgeft.runtime import Predictor
from edgeft.runtime.sources import SourceStats, _live
from tests.conftest import assert_one_line_error, make_image
from tests.conftest import make_artifact


@pytest.fixture(scope="module")
def onnx_art(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("rt")
    return export(make_artifact(root / "torch").path, root / "onnx", dynamic_batch=True)


def test_runtime_loads_no_torch(onnx_art, tiny_data):
    code = ("import sys, cv2; from edgeft.runtime import Predictor;"
            f"p = Predictor({str(onnx_art.path)!r}, backend='ort-cpu');"
            f"img = cv2.imread({str(next((tiny_data / 'test' / 'bad').glob('*.png')))!r});"
            "r = p.predict(img); assert r[0].label in ('bad', 'good');"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'torchvision')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_frames_of_any_size_and_colour_order_agree(onnx_art):
    p = Predictor(onnx_art.path, backend="ort-cpu")
    gray = make_image(0, np.random.default_rng(0), size=32)
    big = cv2.resize(gray, (97, 61))
    bgr = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
    rgb = bgr[:, :, ::-1].copy()
    a, b, c = p.predict([big]), p.predict([bgr]), p.predict([rgb], source="RGB")
    assert a[0].index == b[0].index == c[0].index
    np.testing.assert_allclose(a[0].probabilities, b[0].probabilities, atol=1e-6)
    assert len(p.predict([gray, big, bgr])) == 3 and abs(sum(a[0].probabilities) - 1) < 1e-6


def test_torch_and_onnx_backends_agree(onnx_art, tmp_path):
    torch_dir = onnx_art.meta.lineage[-1]["parent"]
    frames = [make_image(i % 2, np.random.default_rng(i), size=40) for i in range(4)]
    a = Predictor(torch_dir, backend="torch").logits(frames)
    b = Predictor(onnx_art.path, backend="ort-cpu").logits(frames)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_bare_onnx_needs_an_explicit_contract(onnx_art, tmp_path):
    import onnx

    m = onnx.load(str(onnx_art.model_path))
    del m.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(m, str(bare))
    with pytest.raises(ArtifactError, match="no edgeft metadata"):
        Predictor(bare)
    p = Predictor(bare, contract=InputContract(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, resize="stretch"),
                  class_names=["bad", "good"])
    assert p.predict(make_image(0, np.random.default_rng(0)))[0].label in ("bad", "good")


def test_backend_errors(onnx_art):
    with pytest.raises(ConfigError, match="did you mean: ort-cpu"):
        Predictor(onnx_art.path, backend="ort-cpuu")
    with pytest.raises(ConfigError, match="runs model.pt"):
        Predictor(onnx_art.path, backend="torch")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(DependencyError, match="ort-cuda is not available"):
            Predictor(onnx_art.path, backend="ort-cuda")


def _write_video(path, n=6, size=48):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size, size))
    assert w.isOpened()
    for i in range(n):
        w.write(cv2.cvtColor(make_image(i % 2, np.random.default_rng(i), size), cv2.COLOR_GRAY2BGR))
    w.release()


def test_infer_on_a_video_writes_one_line_per_frame(cli, onnx_art, tmp_path):
    video = tmp_path / "clip.avi"
    _write_video(video, n=7)
    out = tmp_path / "out.jsonl"
    r = cli("infer", onnx_art.path, video, "--out", out, "--batch", "3")
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(7))
    assert all(x["label"] in ("bad", "good") and x["backend"] == "ort-cpu" and x["latency_ms"] > 0 for x in lines)


def test_infer_on_a_folder_reports_unreadable_files(cli, onnx_art, tiny_data, tmp_path):
    import shutil

    folder = tmp_path / "imgs"
    shutil.copytree(tiny_data / "test" / "bad", folder)
    (folder / "broken.png").write_bytes(b"junk")
    r = cli("infer", onnx_art.path, folder)
    assert r.exit_code == 0
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 9 and sum("error" in x for x in lines) == 1


def test_infer_out_creates_its_folder(cli, onnx_art, tiny_data, tmp_path):
    out = tmp_path / "results" / "today" / "preds.jsonl"
    r = cli("infer", onnx_art.path, tiny_data / "test" / "bad", "--out", out)
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == len(list((tiny_data / "test" / "bad").iterdir()))


def test_infer_fails_when_no_image_could_be_read(cli, onnx_art, tmp_path):
    (tmp_path / "imgs").mkdir()
    for name in ("a.png", "b.jpg"):
        (tmp_path / "imgs" / name).write_bytes(b"junk")
    r = cli("infer", onnx_art.path, tmp_path / "imgs")
    assert_one_line_error(r, "none of the 2 image(s) could be read")
    assert [("error" in json.loads(x)) for x in r.stdout.splitlines()] == [True, True]  # each file's own line
    assert_one_line_error(cli("infer", onnx_art.path, tmp_path / "imgs" / "a.png"), "none of the 1 image(s)")


def test_infer_bad_sources(cli, onnx_art, tmp_path):
    assert_one_line_error(cli("infer", onnx_art.path, tmp_path / "missing.png"), "source not found")
    (tmp_path / "notes.txt").write_text("x")
    assert_one_line_error(cli("infer", onnx_art.path, tmp_path / "notes.txt"), "neither an image")
    (tmp_path / "bad.avi").write_bytes(b"not a video")
    assert_one_line_error(cli("infer", onnx_art.path, tmp_path / "bad.avi"), "video")


def test_live_source_drops_oldest_and_reconnects(tmp_path):
    """A file opened as a 'stream': its end is a dropped connection that is reopened; a slow consumer drops frames."""
    video = tmp_path / "clip.avi"
    _write_video(video, n=20)
    stats = SourceStats()
    got = []
    for frame in _live(resolve(str(video)), stats, queue_size=2, max_reconnects=3, stop=threading.Event(), backoff_s=0.01):
        got.append(frame.index)
        threading.Event().wait(0.01)  # slower than the reader
        if frame.index >= 30:
            break
    assert stats.reconnects >= 1 and stats.dropped > 0
    assert got == sorted(got) and len(got) < got[-1] + 1  # frames were skipped, never reordered


def test_live_source_that_never_opens(tmp_path):
    from edgeft.errors import DataError

    with pytest.raises(DataError, match="cannot open stream"):
        list(_live(resolve("rtsp://127.0.0.1:9/none"), SourceStats(), 2, 0, threading.Event()))


def test_compare_backends_on_real_images(cli, onnx_art, tiny_data):
    torch_dir = onnx_art.meta.lineage[-1]["parent"]
    r = cli("compare-backends", onnx_art.path, torch_dir, "--data", tiny_data, "--n", "16")
    assert r.exit_code == 0, r.output
    lines = {line.split()[0]: line for line in r.output.splitlines()[1:]}
    assert lines["ort-cpu"].split()[1] == "pass" and lines["torch"].split()[1] == "pass"
    assert "skipped" in lines["ort-cuda"] or "pass" in lines["ort-cuda"]


def test_gstreamer_pipeline_source(cli, onnx_art):
    """A GStreamer pipeline is a live source; pip's OpenCV has no GStreamer, which is said in one line."""
    from edgeft.runtime.sources import describe, gstreamer_supported

    pipeline = "rtspsrc location=rtsp://cam/1 ! rtph264depay ! h264parse ! nvv4l2decoder ! videoconvert ! appsink"
    assert describe(pipeline) == "gstreamer"
    r = cli("infer", onnx_art.path, pipeline, "--reconnects", "0")
    if gstreamer_supported():
        assert_one_line_error(r, "cannot open GStreamer pipeline")
    else:
        assert_one_line_error(r, "no GStreamer support", "rtsp://")
