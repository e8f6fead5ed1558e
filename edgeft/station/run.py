"""``edgeft infer``: the station assembled from its settings: the model (and the watch for the next one), the
streams, the outputs (JSON lines, MQTT, kept evidence, overlays), the metrics endpoint with its probes; then run,
and the exit status a supervisor acts on. Everything that can be refused is refused before the first frame."""

from __future__ import annotations

import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeft import progress
from edgeft.errors import ConfigError


@dataclass
class StationConfig:
    """What ``edgeft infer`` was asked (its options, one field each)."""

    model: Path
    sources: list[str]
    names: list[str] = field(default_factory=list)
    products: list[str] = field(default_factory=list)  # one for every source, or one per source
    backend: str = "auto"
    batch: int = 1
    threads: int | None = None
    queue_size: int = 8
    reconnects: int = 10
    max_frames: int | None = None
    contract: Any = None
    classes: list[str] | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    ready_within_s: float = 10.0
    stats_every: int | None = None
    require_policy: bool = False
    overlays: Path | None = None
    station: str | None = None
    mqtt: str | None = None
    mqtt_topic: str | None = None
    mqtt_buffer: int = 10000
    save: tuple[str, str] | None = None
    save_cap_mb: float = 2048.0
    save_pass_share: float = 0.0
    watch: bool = False
    realtime: bool = False
    opcua: str | None = None
    opcua_node: str | None = None

    def check(self) -> None:
        if self.batch < 1:
            raise ConfigError(f"--batch must be >= 1, got {self.batch}")
        if self.stats_every is not None and self.stats_every < 1:
            raise ConfigError(f"--stats-every must be >= 1 frames, got {self.stats_every}")
        if self.names and len(self.names) != len(self.sources):
            raise ConfigError(f"--source-name was given {len(self.names)} time(s) for {len(self.sources)} source(s): "
                              "give one per SOURCE, in order, or none")
        if len(self.products) not in (0, 1, len(self.sources)):
            raise ConfigError(f"--product was given {len(self.products)} times for {len(self.sources)} sources: give "
                              "one for every SOURCE, or one per SOURCE, in order")
        if not self.ready_within_s > 0:
            raise ConfigError(f"--ready-within must be positive seconds, got {self.ready_within_s}")
        if self.watch and not Path(self.model).is_dir():
            raise ConfigError(f"--watch watches an artifact directory (or a symlink to one) for a new model; {self.model} "
                              "is not one")
        if self.station is not None and not re.fullmatch(r"[A-Za-z0-9._-]+", self.station):
            raise ConfigError(f"--station {self.station!r}: letters, digits, '.', '_' and '-' only (it is a topic "
                              "level)")


def station_name(given: str | None) -> str:
    """The station's name: the one given, else the host's, as a topic level."""
    return given or re.sub(r"[^A-Za-z0-9._-]+", "-", socket.gethostname()) or "station"


def check_products(policy: Any, products: list[str | None], names: list[str], model: Path) -> None:
    """Refuse a product the model's policy has no operating point for; warn for a stream of a per-product policy that
    names none (it is decided at the point chosen over the whole mix)."""
    named = [p for p in products if p is not None]
    if named and policy is None:
        raise ConfigError(f"--product chooses an operating point of the model's decision policy, and {model} carries "
                          "none; choose one with `edgeft decide --by-product`")
    for p in named:
        policy.for_product(p)  # ConfigError naming the products it has
    if policy is not None and policy.products:
        for n, p in zip(names, products):
            if p is None:
                progress.warn(f"stream {n} names no product; the model has an operating point per product "
                              f"({', '.join(sorted(policy.products))}): it is decided at the overall one; pass "
                              "--product")


def _overlay_writer(folder: Path):
    """What the task draws over each frame, written to ``folder`` named after its source and frame number."""
    from edgeft.images import write_image

    def write(predictor: Any, f: Any, p: Any) -> Path:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(f.source.split("?")[0]).stem or "frame")[:80]
        return write_image(folder / f"{stem}-{f.index:06d}.png", predictor.draw(f.image, p))

    return write


def run_station(cfg: StationConfig, out_path: Path | None = None) -> int:
    """Assemble and run the station; the exit status (0, or :data:`~edgeft.station.streams.EXIT_SOURCE_LOST`)."""
    from edgeft.redact import resolve
    from edgeft.runtime import Predictor
    from edgeft.runtime.monitor import LineMetrics, MetricsServer
    from edgeft.station.streams import EXIT_SOURCE_LOST, Station, Stream, check_names
    from edgeft.station.swap import ModelSlot

    cfg.check()
    sources = [resolve(s, cfg.names[k] if cfg.names else None) for k, s in enumerate(cfg.sources)]
    check_names(sources)
    name = station_name(cfg.station)
    evidence_cfg = None
    if cfg.save is not None:
        from edgeft.station.evidence import EvidenceConfig

        evidence_cfg = EvidenceConfig.parse(cfg.save[0], cfg.save[1], cfg.save_cap_mb, cfg.save_pass_share)
    target = None
    if cfg.mqtt is not None:
        from edgeft.station.mqtt import MqttTarget

        target = MqttTarget.parse(cfg.mqtt, name, cfg.mqtt_topic)
    elif cfg.mqtt_topic is not None:
        raise ConfigError("--mqtt-topic names where decisions go on a broker; give the broker with --mqtt URL")
    plc = None
    if cfg.opcua is not None:
        from edgeft.station.opcua import OpcUaTarget

        plc = OpcUaTarget.parse(cfg.opcua, cfg.opcua_node)
    elif cfg.opcua_node is not None:
        raise ConfigError("--opcua-node names the variables decisions are written to; give the server with --opcua URL")

    def load(path: Path) -> Any:
        return Predictor(path, backend=cfg.backend, threads=cfg.threads, contract=cfg.contract,
                         class_names=cfg.classes, require_policy=cfg.require_policy)

    predictor = load(cfg.model)
    closing: list[Any] = []
    slot = None
    try:
        if evidence_cfg is not None and predictor.policy is None:
            raise ConfigError(f"--save keeps frames by their decision, and {cfg.model} carries no decision policy; "
                              f"choose one with `edgeft decide {cfg.model} --data DATA --positive CLASS ...`")
        if cfg.overlays is not None:
            if getattr(predictor.head, "draw", None) is None:  # refused before any frame is read
                raise ConfigError(f"--heatmaps needs an anomaly model (`edgeft anomaly`) or a detector (`edgeft "
                                  f"detect`); {cfg.model} is a {predictor.task.name} model, which draws nothing over "
                                  "its frames")
            Path(cfg.overlays).mkdir(parents=True, exist_ok=True)
        progress.info(f"backend: {predictor.backend_name} ({predictor.backend_reason}); model {predictor.model_hash}")
        if predictor.policy is not None:
            progress.info(f"decisions: {predictor.policy.text()}")
        products = cfg.products * len(sources) if len(cfg.products) == 1 else cfg.products or [None] * len(sources)
        check_products(predictor.policy, products, [s.name for s in sources], cfg.model)
        slot = ModelSlot(predictor, load, Path(cfg.model) if cfg.watch else None)
        slot.products = {p for p in products if p is not None}
        streams = [Stream(s, product=p) for s, p in zip(sources, products)]
        if cfg.metrics_port is not None or cfg.stats_every:
            for st in streams:
                policy = predictor.policy.for_product(st.product) if predictor.policy is not None else None
                st.metrics = LineMetrics(st.name, predictor.backend_name, predictor.class_names, policy)
        evidence = mqtt = None
        if evidence_cfg is not None:
            from edgeft.station.evidence import EvidenceKeeper

            evidence = EvidenceKeeper(evidence_cfg)
            closing.append(evidence)
        opcua = None
        if plc is not None:
            from edgeft.station.opcua import OpcUaOut

            opcua = OpcUaOut(plc, [st.name for st in streams])
            closing.append(opcua)
        if target is not None:
            from edgeft.station.mqtt import MqttOut

            mqtt = MqttOut(target, name, cfg.mqtt_buffer)
            closing.append(mqtt)
            slot.on_event = mqtt.event
        if out_path:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        stream_out = open(out_path, "w") if out_path else sys.stdout
        station = Station(slot, streams, stream_out, batch=cfg.batch, queue_size=cfg.queue_size,
                          max_reconnects=cfg.reconnects, mqtt=mqtt, evidence=evidence, opcua=opcua,
                          overlays=_overlay_writer(Path(cfg.overlays)) if cfg.overlays is not None else None,
                          stats_every=cfg.stats_every, max_frames=cfg.max_frames, realtime=cfg.realtime)
        server = None
        if cfg.metrics_port is not None:
            server = MetricsServer([s.metrics for s in streams], cfg.metrics_host, cfg.metrics_port,
                                   ready=lambda: station.readiness(cfg.ready_within_s),
                                   extra=lambda: station_counters(name, slot, mqtt, evidence, opcua))
            closing.append(server)
            progress.info(f"metrics: {server.url}")
            progress.info(f"probes: http://{server.host}:{server.port}/healthz and /readyz")
        slot.watch()
        closing.append(slot)
        try:
            stats = station.run()
        finally:
            if out_path and stream_out is not sys.stdout:
                stream_out.close()
            if cfg.stats_every:
                import json

                for st in streams:
                    print(json.dumps({"stats": st.metrics.snapshot()}), file=sys.stderr, flush=True)
        for n, st in stats.items():
            progress.info(f"{n}: {st.frames} frames, {st.unreadable} unreadable, {st.dropped} dropped, "
                          f"{st.reconnects} reconnects" + (", lost" if st.lost else ""))
        failed = [s for s in streams if s.error]
        if failed:  # after the other streams ran to their end
            from edgeft.errors import DataError

            raise DataError(failed[0].error if len(streams) == 1 else
                            f"{len(failed)} of {len(streams)} streams failed; {failed[0].name}: {failed[0].error}")
        return EXIT_SOURCE_LOST if station.lost() else 0
    finally:
        for c in reversed(closing):
            c.close()
        (slot.current if slot is not None else predictor).close()


def station_counters(name: str, slot: Any, mqtt: Any, evidence: Any, opcua: Any = None) -> str:
    """The station's own counters in Prometheus' text format: model swaps, MQTT delivery, OPC UA writes, kept
    evidence."""
    base = f'station="{name}"'
    out = ["# HELP edgeft_model_info the model serving now (its file's SHA-256, short)", "# TYPE edgeft_model_info gauge",
           f'edgeft_model_info{{{base},model="{slot.current.model_hash}"}} 1',
           "# HELP edgeft_model_swaps_total new models swapped in (ok) or refused", "# TYPE edgeft_model_swaps_total counter",
           f'edgeft_model_swaps_total{{{base},result="ok"}} {slot.swaps}',
           f'edgeft_model_swaps_total{{{base},result="refused"}} {slot.refused}']
    if mqtt is not None:
        c = mqtt.counters()
        out += ["# HELP edgeft_mqtt_messages_total decisions and events acknowledged by the broker (sent), not queued "
                "because the buffer was full (dropped)", "# TYPE edgeft_mqtt_messages_total counter",
                f'edgeft_mqtt_messages_total{{{base},result="sent"}} {c["sent"]}',
                f'edgeft_mqtt_messages_total{{{base},result="dropped"}} {c["dropped"]}',
                "# HELP edgeft_mqtt_pending messages waiting for the broker", "# TYPE edgeft_mqtt_pending gauge",
                f"edgeft_mqtt_pending{{{base}}} {c['pending']}",
                "# HELP edgeft_mqtt_connected 1 while the broker is connected", "# TYPE edgeft_mqtt_connected gauge",
                f"edgeft_mqtt_connected{{{base}}} {int(mqtt.connected.is_set())}"]
    if opcua is not None:
        c = opcua.counters()
        out += ["# HELP edgeft_opcua_writes_total decisions written to the PLC, replaced by a newer one before they "
                "were written (superseded), or made while it was away (missed)", "# TYPE edgeft_opcua_writes_total counter"]
        out += [f'edgeft_opcua_writes_total{{{base},result="{k}"}} {v}' for k, v in c.items()]
        out += ["# HELP edgeft_opcua_connected 1 while the PLC's server is connected",
                "# TYPE edgeft_opcua_connected gauge", f"edgeft_opcua_connected{{{base}}} {int(opcua.connected.is_set())}"]
    if evidence is not None:
        c = evidence.counters()
        out += ["# HELP edgeft_evidence_total frames kept, or skipped because the writer fell behind or failed",
                "# TYPE edgeft_evidence_total counter",
                f'edgeft_evidence_total{{{base},result="kept"}} {c["kept"]}',
                f'edgeft_evidence_total{{{base},result="skipped"}} {c["skipped"]}',
                "# HELP edgeft_evidence_bytes the evidence folder's size", "# TYPE edgeft_evidence_bytes gauge",
                f"edgeft_evidence_bytes{{{base}}} {c['bytes']}"]
    return "\n".join(out) + "\n"

