"""What a line supervisor watches while the camera process runs: counters and latency, as Prometheus text.

With a decision policy in the model, also the decisions per kind (pass, review, reject), the reject and
review rates over the last frames, and the drift of the "not OK" score against the validation split's
scores the policy was chosen on (population stability index over a sliding window; above 0.25 the
population has shifted: the camera, the light or the product changed). A reject-rate or drift alarm is
what tells a plant to look.

``edgeft infer --metrics-port N`` serves ``GET /metrics`` (Prometheus' text format 0.0.4) from a thread of
the camera process. It binds to 127.0.0.1 unless an address is given (``--metrics-host``): a camera's
metrics are for the box's own agent, and reaching them from the network is a decision the user makes.
It serves metrics only: no other path, no file names, and the source under its redacted name, never a
URL with credentials. Standard library only, since it runs in the slim camera image.
"""

from __future__ import annotations

import collections
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from edgeft.decision import DECISIONS, PSI_ALARM, PSI_WARN, Policy
from edgeft.errors import ConfigError
from edgeft.redact import redact_text

LATENCY_WINDOW = 1024  # the latency quantiles are over the last this many frames
DRIFT_WINDOW = 500  # rates and score drift are over the last this many decided frames
DRIFT_MIN_FRAMES = 100  # fewer frames than this give no drift value (NaN): a PSI of a handful of frames is noise


QUANTILES = (0.5, 0.9, 0.99)


def _quantile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted values (NaN for none)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _label(value: str) -> str:
    return redact_text(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class LineMetrics:
    """Thread-safe counters of one running source: frames, unreadable, dropped, reconnects, predictions per
    class, and per-frame latency quantiles over a sliding window."""

    def __init__(self, source_name: str, backend: str, classes: list[str], policy: Policy | None = None) -> None:
        self.name, self.backend_name = redact_text(source_name), backend  # as JSON gives them
        self.source, self.backend = _label(source_name), _label(backend)  # as Prometheus label values
        self.policy = policy
        self._lock = threading.Lock()
        self._counts = {"frames": 0, "unreadable": 0, "dropped": 0, "reconnects": 0}
        self._labels: dict[str, int] = {c: 0 for c in classes}
        self._decisions: dict[str, int] = {d: 0 for d in DECISIONS}
        self._boxes: dict[str, int] = {}  # a detector's boxes per class
        self._latency: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self._recent: collections.deque[tuple[str, float]] = collections.deque(maxlen=DRIFT_WINDOW)

    def record(self, label: str | None, latency_ms: float | None, decision: str | None = None,
               not_ok: float | None = None, boxes: list[dict] | None = None) -> None:
        """One frame: its predicted class (None when it could not be read), its inference time, with a policy its
        decision and "not OK" score, and a detector's boxes (counted per class)."""
        with self._lock:
            self._counts["frames"] += 1
            if label is None:
                self._counts["unreadable"] += 1
                return
            self._labels[label] = self._labels.get(label, 0) + 1
            for b in boxes or ():
                self._boxes[b["class"]] = self._boxes.get(b["class"], 0) + 1
            if latency_ms is not None:
                self._latency.append(latency_ms)
            if decision is not None and not_ok is not None:
                self._decisions[decision] = self._decisions.get(decision, 0) + 1
                self._recent.append((decision, not_ok))

    def window(self) -> dict[str, float]:
        """Over the last decided frames: their number, the reject and review rates, and the score drift (PSI
        against the policy's val scores; NaN below ``DRIFT_MIN_FRAMES`` frames)."""
        with self._lock:
            recent = list(self._recent)
        n = len(recent)
        out = {"frames": float(n), "reject_rate": float("nan"), "review_rate": float("nan"), "psi": float("nan")}
        if n and self.policy is not None:
            kinds = [d for d, _ in recent]
            out["reject_rate"] = kinds.count("reject") / n
            out["review_rate"] = kinds.count("review") / n
            if n >= DRIFT_MIN_FRAMES:
                out["psi"] = self.policy.drift(np.array([s for _, s in recent]))
        return out

    def snapshot(self) -> dict:
        """Everything as one JSON-ready mapping (``edgeft infer --stats-every``)."""
        with self._lock:
            counts, labels, decisions = dict(self._counts), dict(self._labels), dict(self._decisions)
            window, boxes = sorted(self._latency), dict(self._boxes)
        d = {"source": self.name, "backend": self.backend_name, **counts, "predictions": labels,
             **({"boxes": boxes} if boxes else {}),
             "latency_ms": {f"p{int(q * 100)}": round(_quantile(window, q), 3) for q in QUANTILES} if window else {}}
        if self.policy is not None:
            w = self.window()
            d.update(decisions=decisions, window={k: (round(v, 4) if v == v else None) for k, v in w.items()})
        return d

    def set_source_counts(self, dropped: int, reconnects: int) -> None:
        with self._lock:
            self._counts["dropped"], self._counts["reconnects"] = dropped, reconnects

    def prometheus(self) -> str:
        """The metrics in Prometheus' text exposition format."""
        with self._lock:
            counts, labels, window = dict(self._counts), dict(self._labels), sorted(self._latency)
            boxes = dict(self._boxes)
        base = f'source="{self.source}",backend="{self.backend}"'
        out = []
        for name, help_text in (("frames", "frames taken from the source"),
                                ("unreadable", "frames that could not be decoded"),
                                ("dropped", "frames dropped because inference fell behind"),
                                ("reconnects", "times the stream was reopened")):
            out += [f"# HELP edgeft_{name}_total {help_text}", f"# TYPE edgeft_{name}_total counter",
                    f"edgeft_{name}_total{{{base}}} {counts[name]}"]
        out += ["# HELP edgeft_predictions_total frames predicted as each class",
                "# TYPE edgeft_predictions_total counter"]
        out += [f'edgeft_predictions_total{{{base},class="{_label(c)}"}} {n}' for c, n in labels.items()]
        if boxes:
            out += ["# HELP edgeft_boxes_total boxes a detector returned, per class",
                    "# TYPE edgeft_boxes_total counter"]
            out += [f'edgeft_boxes_total{{{base},class="{_label(c)}"}} {n}' for c, n in sorted(boxes.items())]
        out += [f"# HELP edgeft_latency_ms per-frame inference time over the last {LATENCY_WINDOW} frames",
                "# TYPE edgeft_latency_ms summary"]
        for q in QUANTILES:
            out.append(f'edgeft_latency_ms{{{base},quantile="{q}"}} {_quantile(window, q):.3f}')
        out += [f"edgeft_latency_ms_count{{{base}}} {len(window)}",
                f"edgeft_latency_ms_sum{{{base}}} {sum(window):.3f}"]
        if self.policy is not None:
            out += self._decision_lines(base)
        return "\n".join(out) + "\n"

    def _decision_lines(self, base: str) -> list[str]:
        with self._lock:
            decisions = dict(self._decisions)
        w = self.window()
        out = ["# HELP edgeft_decisions_total frames per decision of the model's policy (pass, review, reject)",
               "# TYPE edgeft_decisions_total counter"]
        out += [f'edgeft_decisions_total{{{base},decision="{d}"}} {n}' for d, n in decisions.items()]
        for name, help_text in (("reject_rate", "share of rejected frames"),
                                ("review_rate", "share of frames sent to review"),
                                ("score_psi", "population stability index of the not-OK score against the val "
                                              f"scores the policy was chosen on (>{PSI_WARN:g}: watch, "
                                              f">{PSI_ALARM:g}: shifted)")):
            key = "psi" if name == "score_psi" else name
            out += [f"# HELP edgeft_{name} {help_text}, over the last {DRIFT_WINDOW} decided frames",
                    f"# TYPE edgeft_{name} gauge",
                    f"edgeft_{name}{{{base}}} {w[key]:.4f}" if w[key] == w[key] else f"edgeft_{name}{{{base}}} NaN"]
        out += ["# HELP edgeft_window_frames decided frames in the rate and drift window",
                "# TYPE edgeft_window_frames gauge", f"edgeft_window_frames{{{base}}} {int(w['frames'])}"]
        return out


def merge_exposition(texts: list[str]) -> str:
    """Several sources' Prometheus texts as one: each metric family once (its HELP and TYPE lines once, all its
    samples together), as the exposition format requires."""
    families: dict[str, list[str]] = {}
    heads: dict[str, list[str]] = {}
    for text in texts:
        current = None
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                current = line.split()[2]
                if current not in heads:
                    heads[current] = []
                    families[current] = []
                if len(heads[current]) < 2 and line not in heads[current]:
                    heads[current].append(line)
            elif line and current is not None:
                families[current].append(line)
    return "".join("\n".join(heads[f] + families[f]) + "\n" for f in families)


class MetricsServer:
    """``GET /metrics`` over HTTP from a daemon thread; ``close()`` stops it. ``port`` 0 takes a free port.

    ``metrics`` is one source's :class:`LineMetrics` or several (a station's streams); ``extra`` adds the station's
    own counters. With ``ready`` (a callable giving (ready, details)), it also serves the supervisor's probes:
    ``/healthz`` (200 while the process serves at all) and ``/readyz`` (200 when the model is loaded and frames flow,
    else 503, with the details as JSON)."""

    def __init__(self, metrics: LineMetrics | list[LineMetrics], host: str = "127.0.0.1", port: int = 0,
                 ready: Any = None, extra: Any = None) -> None:
        import json

        if not 0 <= port <= 65535:
            raise ConfigError(f"--metrics-port must be in 0..65535, got {port}")
        sources = metrics if isinstance(metrics, list) else [metrics]

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (the http.server interface)
                path = self.path.split("?")[0]
                if path == "/metrics":
                    text = merge_exposition([m.prometheus() for m in sources] + ([extra()] if extra else []))
                    self._send(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/healthz" and ready is not None:
                    self._send(200, b'{"alive": true}\n', "application/json")
                elif path == "/readyz" and ready is not None:
                    ok, details = ready()
                    self._send(200 if ok else 503, (json.dumps(details) + "\n").encode(), "application/json")
                else:
                    self.send_error(404)

            def log_message(self, *args) -> None:  # no access log on the camera's stderr
                pass

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as e:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}; pick another "
                              "--metrics-port or --metrics-host") from None
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="edgeft-metrics")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
