"""The inspection station (``edgeft infer`` with several streams, MQTT, kept evidence, probes and a hot model swap),
against a real MQTT broker (amqtt, in a process of its own) and real video files."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import assert_one_line_error

REPO = Path(__file__).resolve().parents[1]


def video(path: Path, frames: int, fps: float = 30.0, seed: int = 0) -> Path:
    """An MJPG video of noisy 32x32 frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (32, 32))
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    writer.release()
    return path


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class BrokerProcess:
    """tests/mqtt_broker.py in a process of its own: start, stop (SIGTERM), start again on the same port."""

    def __init__(self, record: Path, port: int | None = None) -> None:
        self.record, self.port = record, port or free_port()
        record.touch()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "BrokerProcess":
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.mqtt_broker", str(self.port), str(self.record)],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def received(self, suffix: str = "/decision") -> list[dict]:
        out = []
        for line in self.record.read_text().splitlines():
            m = json.loads(line)
            if m["topic"].endswith(suffix):
                out.append(json.loads(m["payload"]))
        return out


@pytest.fixture(scope="module")
def decided_model(tiny_onnx, tiny_data, tmp_path_factory):
    """The tiny ONNX classifier with a decision policy (so frames are passed, reviewed or rejected)."""
    from click.testing import CliRunner

    from edgeft.cli import cli as entry

    path = tmp_path_factory.mktemp("station") / "model"
    shutil.copytree(tiny_onnx.path, path)
    r = CliRunner().invoke(entry, ["-q", "decide", str(path), "--data", str(tiny_data), "--positive", "bad",
                                   "--target-recall", "0.9", "--review-budget", "0.2"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return path


def infer(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeft", "infer", *[str(a) for a in args]], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env={**os.environ, "EDGEFT_QUIET": "0"})


def edgeft_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeft", *[str(a) for a in args]], capture_output=True, text=True,
                          timeout=60, cwd=REPO)


def lines_of(path: Path) -> dict[str, list[dict]]:
    """JSON lines grouped by source, without what differs between runs (time, latency)."""
    out: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        d = json.loads(line)
        for k in ("timestamp", "latency_ms"):
            d.pop(k, None)
        out.setdefault(d["source"], []).append(d)
    return out


def test_three_streams_in_one_process_match_three_single_runs_and_a_truncated_one_ends_alone(decided_model,
                                                                                            tmp_path):
    a, b = video(tmp_path / "a.avi", 60, seed=1), video(tmp_path / "b.avi", 90, seed=2)
    c = video(tmp_path / "c.avi", 120, seed=3)
    data = c.read_bytes()
    c.write_bytes(data[: len(data) // 2])  # cut mid-way, as a recording interrupted by a power loss
    singles: dict[str, list[dict]] = {}
    for v in (a, b, c):
        r = infer(decided_model, v, "--out", tmp_path / f"{v.stem}.jsonl")
        assert r.returncode == 0, r.stderr
        singles.update(lines_of(tmp_path / f"{v.stem}.jsonl"))
    r = infer(decided_model, a, b, c, "--out", tmp_path / "all.jsonl", "--metrics-port", "0")
    assert r.returncode == 0, r.stderr
    together = lines_of(tmp_path / "all.jsonl")
    assert together == singles  # per stream, every frame and its decision as when run alone
    assert [len(together[str(v)]) for v in (a, b)] == [60, 90] and 0 < len(together[str(c)]) < 120
    assert {d["decision"] for v in together.values() for d in v} >= {"pass", "reject"}


def test_every_decision_reaches_a_real_broker_once_in_order_per_stream(decided_model, tmp_path):
    import paho.mqtt.client as mqtt

    broker = BrokerProcess(tmp_path / "record.jsonl").start()
    got: list[dict] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="line-plc")
    subscribed = threading.Event()
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("edgeft/cell7/+/decision", qos=1)
    sub.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        v1, v2 = video(tmp_path / "v1.avi", 300, seed=4), video(tmp_path / "v2.avi", 120, seed=5)
        r = infer(decided_model, v1, v2, "--source-name", "left", "--source-name", "right", "--station", "cell7",
                  "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--out", tmp_path / "r.jsonl")
        assert r.returncode == 0, r.stderr
        deadline = time.time() + 20
        while len(got) < 420 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
    lines = lines_of(tmp_path / "r.jsonl")
    for stream, n in (("left", 300), ("right", 120)):
        mine = [m for m in got if m["stream"] == stream]
        assert [m["seq"] for m in mine] == list(range(1, n + 1))  # every decision once, in order
        assert [m["decision"] for m in mine] == [d["decision"] for d in lines[stream]]
        assert {m["model"] for m in mine} == {lines[stream][0]["model"]} and mine[0]["station"] == "cell7"
    events = [e["event"] for e in broker.received("/status")]
    assert events[0] == "started" and events[-1] == "stopped"


def test_decisions_wait_for_a_broker_stopped_for_5_seconds_and_none_is_lost(decided_model, tmp_path):
    """The broker goes away for 5 s mid-run and comes back: the station keeps inferring, buffers the decisions and
    sends them when it returns. What the broker received (recorded on its side, across the restart), deduplicated
    by sequence number (QoS 1 may resend one whose acknowledgement was lost), is every decision in order."""
    broker = BrokerProcess(tmp_path / "record.jsonl").start()
    v = video(tmp_path / "v.avi", 300, fps=30)
    p = subprocess.Popen([sys.executable, "-m", "edgeft", "infer", str(decided_model), str(v), "--realtime",
                          "--source-name", "cam", "--station", "s1", "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
                          "--out", str(tmp_path / "r.jsonl")], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "EDGEFT_QUIET": "0"})
    try:
        deadline = time.time() + 30
        while len(broker.received()) < 40 and time.time() < deadline:
            time.sleep(0.05)
        before = len(broker.received())
        broker.stop()
        time.sleep(5.0)
        broker.start()
        out, err = p.communicate(timeout=90)
    finally:
        p.kill()
        broker.stop()
    assert p.returncode == 0, err
    assert "went away" in err
    seqs = [m["seq"] for m in broker.received()]
    unique = list(dict.fromkeys(seqs))
    assert unique == list(range(1, 301)), (before, len(seqs), err[-3000:])
    assert len(seqs) - len(unique) <= 20  # resent after the outage: at most the in-flight window
    assert 40 <= before < 250  # the outage was mid-run


def test_an_unreachable_broker_at_start_does_not_stop_the_line(decided_model, tmp_path):
    r = infer(decided_model, video(tmp_path / "v.avi", 20), "--mqtt",
              f"mqtt://edgeft:s3cret-pw@127.0.0.1:{free_port()}", "--mqtt-buffer", "5", "--out", tmp_path / "r.jsonl")
    assert r.returncode == 0, r.stderr
    results = (tmp_path / "r.jsonl").read_text()
    assert len(results.splitlines()) == 20  # every frame inferred and written
    assert "not reachable yet" in r.stderr and "buffer full" in r.stderr  # and what could not be sent is said
    assert "s3cret-pw" not in r.stderr + r.stdout + results  # the broker's password is printed nowhere


def test_rejected_and_reviewed_parts_are_kept_with_their_sidecar_and_the_cap_rotates(decided_model, tmp_path):
    v = video(tmp_path / "v.avi", 80)
    r = infer(decided_model, v, "--save", "reject,review", tmp_path / "kept", "--out", tmp_path / "r.jsonl")
    assert r.returncode == 0, r.stderr
    lines = lines_of(tmp_path / "r.jsonl")[str(v)]
    wanted = [d for d in lines if d["decision"] in ("reject", "review")]
    folders = [p for p in (tmp_path / "kept").iterdir() if p.is_dir()]
    assert len(folders) == 1 and folders[0].name.endswith("v.avi")  # a folder per stream, named after it
    sides = sorted(folders[0].glob("*.json"))
    assert len(sides) == len(wanted) == len(list(folders[0].glob("*.png"))) > 0
    side = json.loads(sides[0].read_text())
    assert side["decision"] in ("reject", "review") and side["model"] == lines[0]["model"]
    assert "reject at score" in side["policy"] and side["stream"] == str(v)
    png = cv2.imread(str(sides[0].with_suffix(".png")))
    assert png.shape == (32, 32, 3)
    one = sum(p.stat().st_size for p in sides[0].parent.iterdir()) / len(sides)  # a frame's files
    cap_mb = 5 * one / 1e6
    r = infer(decided_model, v, "--save", "reject,review", tmp_path / "capped", "--save-cap-mb", str(cap_mb),
              "--out", tmp_path / "r2.jsonl")
    assert r.returncode == 0, r.stderr
    kept = list((tmp_path / "capped").rglob("*.png"))
    assert 0 < len(kept) <= 6 and sum(p.stat().st_size for p in (tmp_path / "capped").rglob("*.*")) <= cap_mb * 1e6 * 1.3
    newest = max(int(p.stem.split("-")[2]) for p in kept)
    assert newest == max(d["frame"] for d in wanted)  # the oldest went, the latest stayed


def test_probes_say_alive_and_ready_while_frames_flow(decided_model, tmp_path):
    v = video(tmp_path / "v.avi", 150, fps=30)
    p = subprocess.Popen([sys.executable, "-m", "edgeft", "infer", str(decided_model), str(v), str(v), "--realtime",
                          "--source-name", "a", "--source-name", "b", "--metrics-port", "0", "--out",
                          str(tmp_path / "r.jsonl")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, "EDGEFT_QUIET": "0"})
    try:
        base = None
        for line in p.stderr:
            if line.startswith("probes: "):
                base = line.split()[1].rsplit("/", 1)[0]
                break
        assert base is not None
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            assert r.status == 200
        deadline, ready = time.time() + 20, None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
                    ready = json.loads(r.read())
                    break
            except urllib.error.HTTPError as e:  # 503 until both streams gave a frame
                assert e.code == 503
                time.sleep(0.1)
        assert ready["ready"] and set(ready["streams"]) == {"a", "b"}
        port = base.rsplit(":", 1)[1]
        assert edgeft_cli("probe", "--port", port).returncode == 0  # the images' health check
        assert edgeft_cli("probe", "--port", str(free_port())).returncode == 1  # nothing there
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            text = r.read().decode()
        assert text.count("# HELP edgeft_frames_total") == 1  # one family, both streams' samples in it
        assert 'edgeft_frames_total{source="a"' in text and 'edgeft_frames_total{source="b"' in text
        assert 'edgeft_model_swaps_total{station=' in text
        p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0


def _second_model(tiny_data: Path, root: Path, classes=("bad", "good")) -> Path:
    """Another tiny ONNX classifier (other weights, so another hash) with its own policy."""
    import torch
    from click.testing import CliRunner

    from edgeft import artifact
    from edgeft.cli import cli as entry
    from edgeft.export.stage import export
    from edgeft.models import create, save_artifact
    from tests.conftest import tiny_contract

    torch.manual_seed(7)
    model, _ = create("test_efficientnet", weights=None, num_classes=len(classes))
    meta = artifact.Meta(kind="torch", arch="test_efficientnet", class_names=list(classes), input=tiny_contract())
    a = export(save_artifact(model, root / "torch", meta).path, root / "onnx", dynamic_batch=True)
    if list(classes) == ["bad", "good"]:
        r = CliRunner().invoke(entry, ["-q", "decide", str(a.path), "--data", str(tiny_data), "--positive", "bad",
                                       "--target-recall", "0.9"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    return a.path


def test_a_new_model_swaps_in_between_frames_and_a_broken_one_is_refused(decided_model, tiny_data, tmp_path):
    """Under a running video stream: the deployment flips the watched symlink; no frame is dropped, every frame
    after the swap carries the new hash. Then a corrupt model: refused, counted, the new one keeps serving."""
    from edgeft.redact import resolve
    from edgeft.runtime import Predictor
    from edgeft.station.streams import Station, Stream
    from edgeft.station.swap import ModelSlot

    v2 = _second_model(tiny_data, tmp_path / "v2")
    broken = tmp_path / "broken"
    shutil.copytree(v2, broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    meta = json.loads((broken / "meta.json").read_text())
    meta["model_sha256"] = "0" * 64
    (broken / "meta.json").write_text(json.dumps(meta))
    current = tmp_path / "current"
    current.symlink_to(decided_model)
    slot = ModelSlot(Predictor(current), lambda p: Predictor(p), current, poll_s=0.05)
    events: list[tuple[str, dict]] = []
    slot.on_event = lambda e, **kw: events.append((e, kw))

    class Out:
        """The JSON lines; at frame 100 the deployment flips the symlink, at 200 to the broken model, each time
        holding the next frame until the watcher has decided (a file's reader waits meanwhile: nothing drops)."""

        def __init__(self) -> None:
            self.lines: list[dict] = []

        def write(self, text: str) -> None:
            self.lines.append(json.loads(text))
            n = len(self.lines)
            if n in (100, 200):
                target = v2 if n == 100 else broken
                tmp = tmp_path / "flip"
                tmp.symlink_to(target)
                os.replace(tmp, current)
                decided = ((lambda: slot._next is not None or slot.swaps >= 1) if n == 100 else
                           (lambda: slot.refused >= 1))
                deadline = time.time() + 30
                while time.time() < deadline and not decided():
                    time.sleep(0.01)

        def flush(self) -> None:
            pass

    out = Out()
    slot.watch()
    try:
        stats = Station(slot, [Stream(resolve(str(video(tmp_path / "v.avi", 300))))], out).run()
    finally:
        slot.close()
        slot.current.close()
    assert [d["frame"] for d in out.lines] == list(range(300)) and stats[str(tmp_path / "v.avi")].dropped == 0
    hashes = [d["model"] for d in out.lines]
    first_new = hashes.index(hashes[-1])
    assert hashes[0] != hashes[-1] and first_new >= 100  # swapped after frame 100 was written ...
    assert set(hashes[:first_new]) == {hashes[0]} and set(hashes[first_new:]) == {hashes[-1]}  # ... once, cleanly
    assert slot.swaps == 1 and slot.refused == 1
    assert [e for e, _ in events] == ["model_swapped", "model_refused"]


def test_a_new_model_with_other_classes_is_refused_in_one_line(decided_model, tiny_data, tmp_path):
    from edgeft.runtime import Predictor
    from edgeft.station.swap import ModelSlot

    other = _second_model(tiny_data, tmp_path / "other", classes=("bad", "good", "scratch"))
    slot = ModelSlot(Predictor(decided_model), lambda p: Predictor(p))
    try:
        assert slot.prepare(other) is False and slot.refused == 1 and slot._next is None
        new = Predictor(other)
        why = slot.incompatible(new)
        new.close()
        assert "classes ['bad', 'good', 'scratch'] differ" in why
    finally:
        slot.current.close()


@pytest.mark.parametrize("args, fragments", [
    (["--source-name", "cam", "--source-name", "cam"], ["two streams are named 'cam'"]),
    (["--mqtt", "mqtt://127.0.0.1:1883", "--mqtt-topic", "plant/+/x"], ["--mqtt-topic", "wildcards"]),
    (["--mqtt-topic", "plant/x"], ["--mqtt-topic", "--mqtt URL"]),
    (["--save", "reject", "FILE/sub"], ["--save", "cannot write there"]),
    (["--save", "reject,review", "DIR", "--save-cap-mb", "0"], ["--save-cap-mb must be positive"]),
    (["--save", "rejects", "DIR"], ["--save 'rejects'", "reject, review, pass"]),
    (["--station", "cell/7"], ["--station 'cell/7'"]),
    (["--mqtt", "mqtt://edgeft:${EDGEFT_TEST_UNSET}@127.0.0.1:1883"], ["EDGEFT_TEST_UNSET", "is not set"]),
])
def test_bad_station_settings_are_refused_in_one_line(cli, decided_model, tmp_path, args, fragments):
    (tmp_path / "FILE").write_text("a file, not a folder")
    v, w = video(tmp_path / "v.avi", 5), video(tmp_path / "w.avi", 5)
    args = [str(tmp_path / a) if a in ("FILE/sub", "DIR") else a for a in args]
    r = cli("infer", decided_model, v, w, *args, "--out", tmp_path / "r.jsonl")
    assert_one_line_error(r, *fragments)
    assert not (tmp_path / "r.jsonl").exists() and not (tmp_path / "DIR").exists()


class PlcServer:
    """A real OPC UA server (asyncua's), as a PLC exposes its tags: for each stream a Decision (String, or Int32 for
    the one named "numeric") and a Seq (UInt32) variable under ns=2;s=Cell7.STREAM, each change recorded."""

    def __init__(self, streams: list[str]) -> None:
        from asyncua import ua
        from asyncua.sync import Server

        self.port = free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/plc/"
        self.server = Server()
        self.server.set_endpoint(self.url)
        ns = self.server.register_namespace("urn:edgeft-test-plc")
        assert ns == 2
        cell = self.server.nodes.objects.add_object(ns, "Cell7")
        self.changes: list[tuple[str, str, object]] = []
        self.vars = {}
        for s in streams:
            numeric = s == "numeric"
            d = cell.add_variable(ua.NodeId(f"Cell7.{s}.Decision", ns), f"{s}.Decision",
                                  ua.Variant(0, ua.VariantType.Int32) if numeric else "")
            q = cell.add_variable(ua.NodeId(f"Cell7.{s}.Seq", ns), f"{s}.Seq", ua.Variant(0, ua.VariantType.UInt32))
            d.set_writable()
            q.set_writable()
            self.vars[s] = (d, q)
        self.server.start()
        recorder = self

        class Handler:
            def datachange_notification(self, node, val, data):
                recorder.changes.append((node.nodeid.Identifier, val))

        self.sub = self.server.create_subscription(20, Handler())
        for d, q in self.vars.values():
            self.sub.subscribe_data_change([d, q])

    def stop(self) -> None:
        self.server.stop()


def test_decisions_are_written_to_a_plcs_opc_ua_tags_with_a_sequence_number(decided_model, tmp_path):
    plc = PlcServer(["left", "numeric"])
    try:
        v1, v2 = video(tmp_path / "v1.avi", 60, seed=8), video(tmp_path / "v2.avi", 45, seed=9)
        r = infer(decided_model, v1, v2, "--realtime", "--source-name", "left", "--source-name", "numeric",
                  "--opcua", plc.url, "--opcua-node", "ns=2;s=Cell7.{stream}", "--out", tmp_path / "r.jsonl",
                  "--metrics-port", "0")
        assert r.returncode == 0, r.stderr
        time.sleep(0.3)  # the last notifications
        lines = lines_of(tmp_path / "r.jsonl")
        for stream, n in (("left", 60), ("numeric", 45)):
            d, q = plc.vars[stream]
            last = lines[stream][-1]["decision"]
            assert q.read_value() == n  # the PLC sees the last part's number ...
            assert d.read_value() == (last if stream == "left" else {"pass": 0, "review": 1, "reject": 2}[last])
            seqs = [v for k, v in plc.changes if k == f"Cell7.{stream}.Seq" and v]
            assert seqs == sorted(seqs) and len(seqs) >= 0.9 * n  # ... every new part, in order, at 30 frames/s
    finally:
        plc.stop()


def test_an_opc_ua_node_the_plc_does_not_have_is_refused_in_one_line(cli, decided_model, tmp_path):
    plc = PlcServer(["left"])
    try:
        v = video(tmp_path / "v.avi", 5)
        r = cli("infer", decided_model, v, "--source-name", "right", "--opcua", plc.url, "--opcua-node",
                "ns=2;s=Cell7.{stream}", "--out", tmp_path / "r.jsonl")
        assert_one_line_error(r, "no variable ns=2;s=Cell7.right.Decision", "stream 'right'")
        assert not (tmp_path / "r.jsonl").exists()
    finally:
        plc.stop()


def test_batches_fill_up_to_the_batch_size_and_decide_as_one_frame_at_a_time(decided_model, tmp_path):
    v = video(tmp_path / "v.avi", 21)
    for b in (1, 8):
        r = infer(decided_model, v, "--batch", b, "--out", tmp_path / f"b{b}.jsonl")
        assert r.returncode == 0, r.stderr
    one, eight = (lines_of(tmp_path / f"b{b}.jsonl")[str(v)] for b in (1, 8))
    assert [(d["frame"], d["label"], d["decision"]) for d in one] == [(d["frame"], d["label"], d["decision"])
                                                                     for d in eight]
    assert max(abs(a["not_ok"] - b["not_ok"]) for a, b in zip(one, eight)) < 1e-4
    import io

    from edgeft.redact import resolve
    from edgeft.runtime import Predictor
    from edgeft.station.streams import Station, Stream
    from edgeft.station.swap import ModelSlot

    predictor, sizes = Predictor(decided_model), []
    real = predictor.predict
    predictor.predict = lambda frames, **kw: sizes.append(len(frames)) or real(frames, **kw)
    try:
        Station(ModelSlot(predictor, Predictor), [Stream(resolve(str(v)))], io.StringIO(), batch=8).run()
    finally:
        predictor.close()
    assert sum(sizes) == 21 and max(sizes) == 8  # a file's reader keeps a whole batch waiting


def test_a_broker_password_from_the_environment_may_hold_reserved_characters(monkeypatch):
    from edgeft.station.mqtt import MqttTarget
    from edgeft.station.opcua import OpcUaTarget

    monkeypatch.setenv("EDGEFT_TEST_PW", "p@ss/w:rd")
    t = MqttTarget.parse("mqtts://edgeft:${EDGEFT_TEST_PW}@broker:8883", "cell7")
    assert (t.host, t.port, t.tls, t.username, t.password) == ("broker", 8883, True, "edgeft", "p@ss/w:rd")
    u = OpcUaTarget.parse("opc.tcp://plc:${EDGEFT_TEST_PW}@10.0.0.5:4840/ua", "ns=2;s=Cell7.{stream}")
    assert (u.url, u.username, u.password) == ("opc.tcp://10.0.0.5:4840/ua", "plc", "p@ss/w:rd")
