"""Decisions to the line over MQTT (``edgeft infer --mqtt mqtt://broker:1883``), with paho-mqtt, the Eclipse
Foundation's client.

Each decided frame is one message on ``PREFIX/STREAM/decision`` (PREFIX defaults to ``edgeft/STATION``), QoS 1, as
JSON: the stream, its sequence number, the frame, the time, the decision, the class, the score, the not-OK score and
the model's hash. QoS 1 is MQTT's at-least-once: the broker acknowledges each message and the client resends what was
not acknowledged after a reconnection, so a consumer that keeps the last ``seq`` per stream sees each decision once,
in order. The station's own events (started, a model swapped in or refused, a stream lost, stopped) go to
``PREFIX/status``; the broker announces ``offline`` there (MQTT's last will) if the process dies.

A broker that is away (at start or later) does not stop the line: frames are still inferred, and messages wait in
the client's queue, in order, up to ``buffer`` messages, and go out when the broker is back. A message that finds
the queue full is not queued and is counted (``edgeft_mqtt_dropped_total``, and a warning): nothing is lost silently.
Credentials in the URL (``mqtt://user:${PASSWORD}@host``) are resolved from the environment and never printed.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from edgeft import progress
from edgeft.errors import ConfigError, DependencyError
from edgeft.redact import expand, redact_text

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
DEFAULT_BUFFER = 10000  # messages: at 10 decisions a second, about 17 minutes of a broker away


def _paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise DependencyError("--mqtt needs paho-mqtt: pip install 'edgeft[station]'") from None
    return mqtt


@dataclass(frozen=True)
class MqttTarget:
    """Where decisions go: the broker (``mqtt://`` or ``mqtts://`` with TLS), its credentials, the topic prefix."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    prefix: str

    @classmethod
    def parse(cls, url: str, station: str, prefix: str | None = None) -> "MqttTarget":
        """``mqtt://[user[:password]@]host[:port]``; ``${VAR}`` in it is read from the environment."""
        shown = redact_text(url)
        u = urlsplit(expand(url, f"--mqtt {shown}"))
        if u.scheme not in SCHEMES or not u.hostname:
            raise ConfigError(f"--mqtt {shown}: give the broker as mqtt://host[:port] (or mqtts:// for TLS)")
        try:
            port = u.port or SCHEMES[u.scheme]
        except ValueError:
            raise ConfigError(f"--mqtt {shown}: the port is not a number") from None
        if u.path not in ("", "/"):
            raise ConfigError(f"--mqtt {shown}: the URL names the broker only; set the topic prefix with --mqtt-topic")
        topic = prefix if prefix is not None else f"edgeft/{station}"
        check_topic(topic, "--mqtt-topic")
        return cls(u.hostname, port, u.scheme == "mqtts", unquote(u.username) if u.username else None,
                   unquote(u.password) if u.password else None, topic.rstrip("/"))

    @property
    def name(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def check_topic(topic: str, what: str) -> None:
    """Refuse a topic a publisher cannot publish to: wildcards, empty levels at the ends, null characters."""
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise ConfigError(f"{what} {topic!r}: a topic to publish to has no wildcards (+, #) and is not empty")
    if topic.startswith("$"):
        raise ConfigError(f"{what} {topic!r}: topics starting with $ belong to the broker")


class MqttOut:
    """Publishes each decision of each stream, and the station's events, to one broker; see the module doc.

    One sender thread hands messages to paho in order, at most :data:`WINDOW` unacknowledged at a time and only while
    connected; after a reconnection it waits until paho's resent messages are acknowledged before handing over new
    ones. (paho alone may send a new message ahead of older ones it resends after a reconnection.)"""

    WINDOW = 20  # messages handed to paho and not yet acknowledged

    def __init__(self, target: MqttTarget, station: str, buffer: int = DEFAULT_BUFFER,
                 connect_timeout_s: float = 5.0) -> None:
        if buffer < 1:
            raise ConfigError(f"--mqtt-buffer must be >= 1 message, got {buffer}")
        mqtt = _paho()
        self.target, self.station, self.buffer = target, station, buffer
        self.connected = threading.Event()
        self.sent = self.dropped = self.handed = 0
        self._waiting: collections.deque[tuple[str, str, bool]] = collections.deque()
        self._cv = threading.Condition()
        self._warned_full = self._closing = self._resync = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgeft-{station}-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv311)
        self.client.max_inflight_messages_set(self.WINDOW)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        if target.username:
            self.client.username_pw_set(target.username, target.password)
        if target.tls:
            self.client.tls_set()
        self.client.will_set(f"{target.prefix}/status", json.dumps({"station": station, "event": "offline"}), qos=1,
                             retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        try:
            self.client.connect_async(target.host, target.port, keepalive=30)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--mqtt {target.name}: {e}") from None
        self.client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, daemon=True, name="edgeft-mqtt")
        self._sender.start()
        if not self.connected.wait(connect_timeout_s):
            progress.warn(f"MQTT broker {target.name} not reachable yet: inferring on, decisions wait in a buffer of "
                          f"{buffer} messages and go out when it answers")

    # paho's callbacks (its network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            progress.warn(f"MQTT broker {self.target.name} refused the connection: {reason_code}")
            return
        with self._cv:
            self.connected.set()
            self._cv.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cv:
            if self.connected.is_set() and not self._closing:
                progress.warn(f"MQTT broker {self.target.name} went away ({reason_code}); decisions are buffered")
            self.connected.clear()
            self._resync = True  # what paho holds is resent first when the broker is back

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cv:
            self.sent += 1
            self._cv.notify_all()

    # the sender thread
    def _send_loop(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._closing and not self._waiting:
                        return
                    unacked = self.handed - self.sent
                    if self._resync and self.connected.is_set() and unacked == 0:
                        self._resync = False
                    if self._waiting and self.connected.is_set() and not self._resync and unacked < self.WINDOW:
                        break
                    self._cv.wait(0.2)
                topic, payload, retain = self._waiting.popleft()
                self.handed += 1
            self.client.publish(topic, payload, qos=1, retain=retain)

    def _publish(self, topic: str, payload: dict[str, Any], retain: bool = False) -> bool:
        with self._cv:
            if len(self._waiting) >= self.buffer:
                self.dropped += 1
                full = not self._warned_full
                self._warned_full = True
            else:
                self._waiting.append((topic, json.dumps(payload, separators=(",", ":")), retain))
                self._cv.notify_all()
                return True
        if full:
            progress.warn(f"MQTT buffer full ({self.buffer} messages unsent to {self.target.name}): decisions are "
                          "dropped and counted until the broker takes them")
        return False

    def decision(self, stream: str, line: dict[str, Any], seq: int, model: str) -> bool:
        """Queue one frame's decision (its JSON line's fields that the line acts on); never blocks."""
        payload = {"station": self.station, "stream": stream, "seq": seq, "frame": line.get("frame"),
                   "time": line.get("timestamp"), "decision": line.get("decision"), "label": line.get("label"),
                   "score": line.get("score"), "not_ok": line.get("not_ok"), "model": model}
        if "boxes" in line:
            payload["boxes"] = line["boxes"]
        return self._publish(f"{self.target.prefix}/{stream}/decision", payload)

    def event(self, event: str, **fields: Any) -> None:
        """A station event on ``PREFIX/status`` (retained: a consumer that connects later reads the last one)."""
        self._publish(f"{self.target.prefix}/status", {"station": self.station, "event": event, "time": time.time(),
                                                       **fields}, retain=True)

    def pending(self) -> int:
        """Messages not yet acknowledged by the broker (waiting, or handed to paho)."""
        with self._cv:
            return len(self._waiting) + self.handed - self.sent

    def close(self, drain_s: float = 10.0) -> None:
        """Wait up to ``drain_s`` for the buffer to reach the broker, then disconnect."""
        deadline = time.time() + drain_s
        while self.pending() > 0 and time.time() < deadline:
            time.sleep(0.05)
        left = self.pending()
        if left > 0:
            progress.warn(f"MQTT: {left} decisions not acknowledged by {self.target.name} at exit")
        with self._cv:
            self._closing = True
            self._waiting.clear()
            self._cv.notify_all()
        self._sender.join(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()

    def counters(self) -> dict[str, int]:
        with self._cv:
            return {"sent": self.sent, "dropped": self.dropped,
                    "pending": len(self._waiting) + self.handed - self.sent}
