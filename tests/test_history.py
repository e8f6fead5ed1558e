"""Results that are kept: bench and gate results in one store (SQLite, or PostgreSQL through a SQLAlchemy URL), series
kept apart per device, and the change detector that catches a slow drift every per-change gate passed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error

HOST_NOISE = 0.02  # the relative run-to-run spread of a bench p50 on the project's 2-core hosts (docs/experiments.md)
FP = {"cpu": "AMD EPYC", "cpu_count": 2, "machine": "x86_64", "onnxruntime": "1.32.0", "edgeft": "0.1.0"}


def rows(values, model="demo", fp=FP, start=0, metric="p50_ms"):
    from edgeft.history.records import device_key
    from edgeft.history.store import Row

    return [Row(recorded_at=float(start + i), kind="bench", model=model, model_sha256=f"{i:064x}", commit=f"c{start + i}",
                device=device_key(fp), device_desc=json.dumps(fp), backend="ort-cpu", batch=1,
                versions="{}", metric=metric, value=float(v)) for i, v in enumerate(values)]


def test_ten_steps_of_three_percent_each_pass_the_gate_and_the_history_flags_them(cli, tmp_path):
    """A deterministic clock: 10 commits at the host's noise, then 10 each 3% slower than the last. Each step passes a
    10% paired gate (its 15 paired ratios judged by edgeft gate's own rule); the history flags the drift by the fourth
    slower commit."""
    from edgeft.bench.gate import judge
    from edgeft.history.store import open_store

    rng = np.random.default_rng(7)
    level = 3.0
    values = list(level * np.exp(rng.normal(0, HOST_NOISE, 10)))
    store = tmp_path / "h.sqlite"
    s = open_store(store)
    s.append(rows(values))
    first_flag = None
    for k in range(1, 11):
        ratios = list(1.03 * np.exp(rng.normal(0, 0.01, 15)))  # the paired gate's per-round ratios of this step
        assert judge(ratios, 1.10, 0.95)[0] == "pass"
        level *= 1.03
        values.append(level * float(np.exp(rng.normal(0, HOST_NOISE))))
        s.append(rows(values[-1:], start=len(values) - 1))
        r = cli("history", "show", "--store", store, "--check", "--json")
        if r.exit_code == 1 and first_flag is None:
            first_flag = k
    s.close()
    assert first_flag is not None and first_flag <= 4, first_flag
    r = cli("history", "show", "--store", store, "--json", "--html", tmp_path / "h.html")
    doc = json.loads(r.stdout)
    assert len(doc) == 1 and len(doc[0]["points"]) == 20 and doc[0]["verdict"]["flagged"]
    assert doc[0]["verdict"]["change"] > 0.25  # 1.03^10 - 1 = 34%
    page = (tmp_path / "h.html").read_text()
    assert page.count("<svg") == 1 and "DRIFT: demo p50_ms" in page and page.count("<circle") == 20


def test_a_falling_accuracy_is_flagged_and_a_rising_one_is_not():
    from edgeft.history.drift import check

    flat = [0.90, 0.91, 0.90, 0.89, 0.90, 0.91, 0.90, 0.90, 0.89, 0.91]
    assert check(flat + [0.80, 0.79, 0.80], "test.accuracy").flagged
    assert not check(flat + [0.99, 0.99, 0.99], "test.accuracy").flagged
    assert check(flat + [0.99, 0.99, 0.99], "p50_ms").flagged  # a latency that rose


def test_an_unchanged_series_raises_no_flag():
    """100 series of 30 commits at the host's noise, judged after every commit: the false alarms counted."""
    from edgeft.history.drift import check

    alarms = 0
    for seed in range(100):
        v = 3.0 * np.exp(np.random.default_rng(1000 + seed).normal(0, HOST_NOISE, 30))
        alarms += any(check(v[:n]).flagged for n in range(13, 31))
    assert alarms <= 2, alarms  # 0 of these 100 at 2% noise; 11 of 400 in benchmarks/history_drift_sim.py


def test_a_five_percent_step_on_a_quiet_series_is_flagged_at_its_third_commit():
    """A paired series (the gate's ratio against a pinned model) is quiet, about 1% a point on this host: there a
    single +5% step is flagged as soon as the last-3 median can show it, and the same points unchanged are not."""
    from edgeft.history.drift import check

    flagged = {0.05: 0, 0.0: 0}
    for seed in range(20):
        rng = np.random.default_rng(seed)
        ref, after = np.exp(rng.normal(0, 0.01, 10)), np.exp(rng.normal(0, 0.01, 3))
        for step in flagged:
            flagged[step] += check(np.concatenate([ref, (1 + step) * after]), "gate_ratio").flagged
    assert flagged[0.05] >= 19 and flagged[0.0] == 0, flagged


def test_bench_and_gate_results_are_recorded_and_devices_are_kept_apart(cli, tiny_onnx, tmp_path):
    store = tmp_path / "h.sqlite"
    r = cli("bench", tiny_onnx.path, "--backend", "ort-cpu", "--rounds", "2", "--duration-s", "0.1", "--warmup-s",
            "0.05", "--no-memory", "--out", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    r = cli("history", "record", tmp_path / "b.json", "--store", store, "--commit", "abc123")
    assert r.exit_code == 0 and "recorded 3 result(s)" in r.stdout and "abc123" in r.stdout, r.output
    r = cli("gate", tiny_onnx.path, tiny_onnx.path, "--max-regression", "100%", "--time-cap-s", "20",
            "--block-s", "0.05", "--out", tmp_path / "g.json")
    assert r.exit_code == 0, r.output
    assert cli("history", "record", tmp_path / "g.json", "--store", store, "--commit", "def456",
               "--name", "onnx").exit_code == 0
    other = dict(json.loads((tmp_path / "b.json").read_text()))
    other["device"] = {**other["device"], "cpu": "Intel Xeon", "reference_ms": 0.25}
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert cli("history", "record", tmp_path / "other.json", "--store", store, "--commit", "abc123").exit_code == 0
    # one CPU name, other INT8/bf16 units (an EPYC Zen 3 and a Zen 4): another device too
    units = other["device"]["cpu_units"]
    other["device"] = {**other["device"], "cpu": json.loads((tmp_path / "b.json").read_text())["device"]["cpu"],
                       "cpu_units": [] if units else ["avx512_vnni", "avx512_bf16"]}
    (tmp_path / "units.json").write_text(json.dumps(other))
    assert cli("history", "record", tmp_path / "units.json", "--store", store, "--commit", "abc123").exit_code == 0
    doc = json.loads(cli("history", "show", "--store", store, "--json").stdout)
    assert len({d["device"] for d in doc}) == 3  # the Xeon's numbers are another series, never averaged in
    assert sorted(len(d["points"]) for d in doc) == [1, 1, 1, 1]  # bench on three devices, the gate's candidate
    from edgeft.history.store import open_store

    from edgeft.artifact import sha256_file

    s = open_store(store)
    kept = s.rows()
    s.close()
    kinds = {(r.kind, r.metric) for r in kept}
    assert {("bench", "p50_ms"), ("bench", "p99_ms"), ("gate", "gate_ratio"), ("gate", "p50_ms")} <= kinds
    assert {r.model_sha256 for r in kept if r.kind == "gate"} == {sha256_file(tiny_onnx.model_path)}  # the whole hash


def _writer(store: str, tag: str, n: int) -> None:  # pragma: no cover (runs in a child process)
    from edgeft.history.store import open_store

    s = open_store(store)
    for i in range(n):
        s.append(rows([1.0, 2.0], model=tag, start=2 * i))


def appending_at_once(store: str) -> list:
    """Two processes appending 60 recordings of 2 rows each to a fresh store at the same time; the rows then there."""
    code = ("import sys; sys.path.insert(0, {root!r}); from tests.test_history import _writer; "
            "_writer({store!r}, {tag!r}, 60)")
    root = str(Path(__file__).resolve().parents[1])
    procs = [subprocess.Popen([sys.executable, "-c", code.format(root=root, store=store, tag=t)]) for t in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    from edgeft.history.store import open_store

    s = open_store(store)
    got = s.rows()
    s.close()
    return got


def test_two_processes_appending_at_once_lose_no_row(tmp_path):
    got = appending_at_once(str(tmp_path / "h.sqlite"))
    assert len(got) == 240 and sum(r.model == "a" for r in got) == 120


def test_processes_opening_a_new_store_at_once_all_find_it_made(tmp_path):
    """Six processes open one new SQLite store at the same moment, four times: the migration's tables and its version
    stamp appear together, so none sees a half-made store (benchmarks/history_store_race.py runs more trials)."""
    code = ("import sys; sys.path.insert(0, {root!r}); from edgeft.history.store import open_store; "
            "open_store(sys.argv[1]).close()").format(root=str(Path(__file__).resolve().parents[1]))
    for trial in range(4):
        store = tmp_path / f"h{trial}.sqlite"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(store)], stderr=subprocess.PIPE) for _ in range(6)]
        failed = [p.stderr.read().decode()[-300:] for p in procs if p.wait(timeout=120) != 0]
        assert not failed, failed[0]


@pytest.mark.parametrize("breakage, fragments", [
    ("newer schema", ["written by a newer edgeft", "upgrade edgeft"]),
    ("not a database", ["is not a results store"]),
    ("another app's database", ["holds other tables", "not a results store"]),
    ("unreachable server", ["cannot be reached"]),
    ("not a results file", ["is not a results file edgeft records"]),
])
def test_bad_stores_are_refused_in_one_line_and_nothing_is_written(cli, tmp_path, breakage, fragments):
    import sqlite3

    store = tmp_path / "h.sqlite"
    bench = tmp_path / "b.json"
    bench.write_text(json.dumps({"schema": "edgeft.bench", "device": FP, "results": [
        {"model": "m", "backend": "ort-cpu", "batch": 1, "status": "ok", "model_sha256": "0" * 64,
         "latency_ms": {"p50": 1.0, "p99": 2.0}}]}))
    args = ["--store", store]
    if breakage == "newer schema":
        from edgeft.history.store import open_store

        open_store(store).close()
        with sqlite3.connect(store) as c:
            c.execute("UPDATE alembic_version SET version_num = '9999'")
    elif breakage == "not a database":
        store.write_bytes(os.urandom(4096))
    elif breakage == "another app's database":
        with sqlite3.connect(store) as c:
            c.execute("CREATE TABLE invoices (id INTEGER)")
    elif breakage == "unreachable server":
        args = ["--store", "postgresql+psycopg://edgeft:secret@127.0.0.1:9/results?connect_timeout=2"]
    elif breakage == "not a results file":
        bench.write_text(json.dumps({"hello": 1}))
    before = store.read_bytes() if store.exists() else None
    r = cli("history", "record", bench, *args, "--commit", "abc")
    assert_one_line_error(r, *fragments)
    assert "secret" not in r.stderr
    assert (store.read_bytes() if store.exists() else None) == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A real PostgreSQL server in a temporary folder (initdb, pg_ctl), trust authentication on 127.0.0.1; run as the
    postgres user when the tests run as root (the server refuses root; pytest's own folders are root's alone)."""
    import tempfile

    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    as_user: list[str] = []
    if os.geteuid() == 0 and not shutil.which("runuser"):
        pytest.skip("running as root without runuser: PostgreSQL refuses to start as root")
    root = Path(tempfile.mkdtemp(prefix="edgeft-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data = root / "data"
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "edgeft"], check=True,
                   capture_output=True, cwd=root)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-p {port} -k {root} -h 127.0.0.1", "start"], check=True, capture_output=True, cwd=root)
    try:
        yield f"postgresql+psycopg://edgeft@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_the_same_store_on_a_postgresql_server(cli, postgres, tmp_path):
    pytest.importorskip("psycopg")
    from edgeft.history.store import open_store

    s = open_store(postgres)
    s.append(rows([3.0] * 10 + [3.3, 3.4, 3.5]))
    s.close()
    r = cli("history", "show", "--store", postgres, "--check")
    assert r.exit_code == 1 and r.stdout.startswith("DRIFT"), r.output
    store = tmp_path / "again.sqlite"  # the same rows and verdict from a SQLite file
    s = open_store(store)
    s.append(rows([3.0] * 10 + [3.3, 3.4, 3.5]))
    s.close()
    assert cli("history", "show", "--store", f"sqlite:///{store}", "--check").exit_code == 1


def test_two_processes_appending_to_a_postgresql_server_lose_no_row(postgres):
    pytest.importorskip("psycopg")
    got = appending_at_once(postgres)  # both make the schema on a fresh database: one wins, the other waits or retries
    assert len(got) == 240 and sum(r.model == "b" for r in got) == 120


def test_the_migrations_make_the_table_the_code_reads(tmp_path):
    import sqlalchemy as sa

    from edgeft.history.schema import results
    from edgeft.history.store import open_store

    s = open_store(tmp_path / "h.sqlite")
    cols = {c["name"]: c["nullable"] for c in sa.inspect(s.engine).get_columns("results")}
    idx = {i["name"]: i["column_names"] for i in sa.inspect(s.engine).get_indexes("results")}
    s.close()
    assert cols == {c.name: c.nullable for c in results.c}
    assert idx == {i.name: [c.name for c in i.columns] for i in results.indexes}


def test_an_evaluation_is_recorded_as_its_split_s_numbers(cli, tiny_onnx, tiny_data, tmp_path):
    store = tmp_path / "h.sqlite"
    r = cli("eval", tiny_onnx.path, "--data", tiny_data, "--positive", "bad", "--record", store, "--commit", "e1")
    assert r.exit_code == 0, r.output
    from edgeft.history.store import open_store

    s = open_store(store)
    got = {r.metric: r for r in s.rows(kind="eval")}
    s.close()
    assert {"test.accuracy", "test.balanced_accuracy", "test.decisions.auroc"} <= set(got)
    assert got["test.accuracy"].backend == "ort-cpu" and got["test.accuracy"].commit == "e1"
    assert got["test.accuracy"].model_sha256 == tiny_onnx.meta.model_sha256
    doc = json.loads(cli("history", "show", "--store", store, "--metric", "test.accuracy", "--json").stdout)
    assert len(doc) == 1 and doc[0]["points"][0][2] == pytest.approx(got["test.accuracy"].value)
