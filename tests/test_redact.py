"""Stream credentials never leave the camera process, and its metrics endpoint listens only where told.

The end-to-end tests run `edgeft infer` in a subprocess, so everything written to the process's file
descriptors (OpenCV's and FFmpeg's own logging included) is captured and searched for the secret.
"""

from __future__ import annotations

import base64
import http.server
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeft.errors import ConfigError
from edgeft.redact import redact_text, resolve
from tests.conftest import assert_one_line_error

SECRET = "s3cret"


def test_redact_text_masks_user_information_of_any_scheme():
    assert redact_text("cannot open rtsp://admin:s3cret@10.0.0.7:554/cam1; check") == \
        "cannot open rtsp://***@10.0.0.7:554/cam1; check"
    assert redact_text("http://u:p@h/x and https://h/y") == "http://***@h/x and https://h/y"
    assert redact_text("rtmp://admin:pa/ss@cam/live") == "rtmp://***@cam/live"  # an unencoded '/' too
    assert redact_text("rtsp://***@cam/x") == "rtsp://***@cam/x"
    assert redact_text("runs/elpv/05-quantize http://www.w3.org/2000/svg") == \
        "runs/elpv/05-quantize http://www.w3.org/2000/svg"


def test_credentials_from_the_environment_are_encoded_and_never_named():
    env = {"CAM_PASSWORD": "p@ss/w:rd", "EDGEFT_RTSP_PASSWORD": "x@y"}
    src = resolve("rtsp://admin:${CAM_PASSWORD}@cam:554/s1", environ=env)
    assert src.spec == "rtsp://admin:p%40ss%2Fw%3Ard@cam:554/s1" and src.name == "rtsp://***@cam:554/s1"
    src = resolve("rtsp://admin@cam/s1", environ=env)  # a user and no password: EDGEFT_RTSP_PASSWORD
    assert src.spec == "rtsp://admin:x%40y@cam/s1" and src.name == "rtsp://***@cam/s1"
    assert resolve("rtsp://admin@cam/s1", "line 3 camera", environ={}).name == "line 3 camera"
    assert resolve("rtsp://10.0.0.7:554/stream@main", environ={}).spec == "rtsp://10.0.0.7:554/stream@main"
    pipeline = resolve("rtspsrc location=rtsp://admin:${CAM_PASSWORD}@cam/s1 latency=0 ! decodebin ! appsink",
                       environ=env)
    assert "p%40ss" in pipeline.spec and pipeline.name.startswith("rtspsrc location=rtsp://***@cam/s1 latency=0")
    assert "p@ss" not in repr(resolve("rtsp://admin:${CAM_PASSWORD}@cam/s1", environ=env))


@pytest.mark.parametrize("spec, env, fragments", [
    ("rtsp://admin:${CAM_PW}@cam/s1", {}, ["CAM_PW", "which is not set"]),
    ("rtsp://admin:p@ss@cam/s1", {}, ["unencoded '@'", "%40", "rtsp://***@cam/s1"]),
    ("rtsp://admin:pa/ss@cam/s1", {}, ["unencoded '/'", "%2F"]),
])
def test_bad_credentials_are_one_redacted_line(spec, env, fragments):
    with pytest.raises(ConfigError) as e:
        resolve(spec, environ=env)
    text = str(e.value)
    assert len(text.splitlines()) == 1 and "ss@" not in text and "p@" not in text
    for f in fragments:
        assert f in text


def test_cli_error_for_an_unset_variable_is_one_line(cli, tiny_onnx, monkeypatch):
    monkeypatch.delenv("CAM_PW", raising=False)
    assert_one_line_error(cli("infer", tiny_onnx.path, "rtsp://admin:${CAM_PW}@127.0.0.1:9/cam1"), "CAM_PW")


def _infer(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeft", "infer", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "EDGEFT_QUIET": "0", **(env or {})})


def test_a_credentialed_url_that_fails_to_open_is_not_printed(tiny_onnx, tmp_path):
    """The found case: the camera's password went to stderr ('cannot open stream rtsp://admin:s3cret@...')."""
    p = _infer(str(tiny_onnx.path), f"rtsp://admin:{SECRET}@127.0.0.1:9/cam1", "--reconnects", "0",
               "--out", str(tmp_path / "r.jsonl"))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2, err
    assert "cannot open stream rtsp://***@127.0.0.1:9/cam1" in err
    assert SECRET not in out + err
    assert not (tmp_path / "r.jsonl").exists() or SECRET not in (tmp_path / "r.jsonl").read_text()


def _video(path: Path, frames: int = 40) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    writer.release()
    return path


class _AuthServer(http.server.ThreadingHTTPServer):
    """Serves one video over HTTP to a client that sends the right Basic credentials, slowly (so the camera
    process is still running while the test reads its metrics); 401 to anyone else."""

    def __init__(self, video: Path, seconds: float) -> None:
        body, expected = video.read_bytes(), "Basic " + base64.b64encode(f"admin:{SECRET}".encode()).decode()
        self.authorized = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="camera"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                server.authorized += 1
                self.send_response(200)
                self.send_header("Content-Type", "video/x-msvideo")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                chunks = 20
                for i in range(chunks):
                    self.wfile.write(body[i * len(body) // chunks:(i + 1) * len(body) // chunks])
                    self.wfile.flush()
                    time.sleep(seconds / chunks)

            def log_message(self, *args) -> None:
                pass

        server = self
        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_frames_flow_from_a_credentialed_url_and_the_secret_is_nowhere(tiny_onnx, tmp_path):
    """A local video served over HTTP behind Basic auth: the credentials in the URL reach the server (frames
    flow), and the metrics endpoint, bound to 127.0.0.1, serves counters; the secret is in no output stream,
    no result file and no metrics text."""
    server = _AuthServer(_video(tmp_path / "clip.avi"), seconds=4.0)
    port = server.server_address[1]
    out_file = tmp_path / "results" / "r.jsonl"
    p = _infer(str(tiny_onnx.path), f"http://admin:{SECRET}@127.0.0.1:{port}/clip.avi", "--reconnects", "0",
               "--out", str(out_file), "--metrics-port", "0")
    lines, metrics_text = [], ""
    try:
        for line in p.stderr:  # the status lines come before the frames flow
            lines.append(line)
            if line.startswith("metrics: "):
                url = line.split(" ", 1)[1].strip()
                break
        assert url.startswith("http://127.0.0.1:"), url  # bound to localhost unless told otherwise
        deadline = time.time() + 60
        while time.time() < deadline and p.poll() is None:
            with urllib.request.urlopen(url, timeout=5) as r:
                metrics_text = r.read().decode()
            if int(re.search(r"^edgeft_frames_total\{.*\} (\d+)$", metrics_text, flags=re.M).group(1)) > 0:
                break
            time.sleep(0.2)
        with pytest.raises(urllib.error.HTTPError):  # metrics only: no other path
            urllib.request.urlopen(url.replace("/metrics", "/"), timeout=5)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
        server.shutdown()
    err = "".join(lines) + err
    assert p.returncode == 3, err  # a live source that stops and stays away past --reconnects is lost: exit 3
    assert server.authorized >= 1
    results = out_file.read_text()
    assert results.count("\n") == 40 and f'"source": "http://***@127.0.0.1:{port}/clip.avi"' in results
    assert f'source="http://***@127.0.0.1:{port}/clip.avi"' in metrics_text
    assert int(re.search(r"^edgeft_frames_total\{.*\} (\d+)$", metrics_text, flags=re.M).group(1)) > 0
    assert 'edgeft_predictions_total{' in metrics_text and 'quantile="0.5"' in metrics_text
    for text in (out, err, results, metrics_text):
        assert SECRET not in text
