"""Decisions to a PLC over OPC UA (``edgeft infer --opcua opc.tcp://plc:4840 --opcua-node "ns=2;s=Cell7.{stream}"``),
with asyncua, the maintained pure-Python OPC UA stack.

A PLC reads tags, not messages: for each stream the station writes two variables in one Write service call, the
decision (``NODE.Decision``: a String "pass" / "review" / "reject", or an integer 0 / 1 / 2 where the variable is
numeric) and the part's sequence number (``NODE.Seq``, an unsigned integer), so the PLC program sees a new part when
``Seq`` changes and reads its decision beside it. ``{stream}`` in the node id is the stream's name.

A tag holds the latest decision, so nothing is queued: a decision that a newer one of the same stream replaces before
it was written is counted (``superseded``), and decisions made while the server is away are counted (``missed``),
not replayed late (an ejector acting on an old part's decision is worse than none). The writer is a thread of its
own: a slow PLC never holds up inference. A server that does not answer at start is retried every few seconds; one
that answers but lacks a variable, or whose variable has a type a decision cannot be written as, is refused in one
line before the first frame. Credentials in the URL (``opc.tcp://user:${PASSWORD}@plc:4840``) come from the
environment and are never printed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from edgeft import progress
from edgeft.errors import ConfigError, DependencyError
from edgeft.redact import expand, redact_text

CODES = {"pass": 0, "review": 1, "reject": 2}  # a numeric Decision variable's values
RETRY_S = 3.0


def _asyncua():
    try:
        from asyncua import ua
        from asyncua.sync import Client
    except ImportError:
        raise DependencyError("--opcua needs asyncua: pip install 'edgeft[opcua]'") from None
    return ua, Client


@dataclass(frozen=True)
class OpcUaTarget:
    """The server, its credentials, and the node id template of each stream's object (``{stream}`` in it)."""

    url: str  # without credentials
    username: str | None
    password: str | None
    node: str

    @classmethod
    def parse(cls, url: str, node: str | None) -> "OpcUaTarget":
        import re

        shown = redact_text(url)
        u = urlsplit(expand(url, f"--opcua {shown}"))
        if u.scheme != "opc.tcp" or not u.hostname:
            raise ConfigError(f"--opcua {shown}: give the server as opc.tcp://host:port[/path]")
        if not node:
            raise ConfigError("--opcua needs --opcua-node, the node id of each stream's object, e.g. "
                              "\"ns=2;s=Cell7.{stream}\" (its Decision and Seq variables are written)")
        if not re.match(r"^(ns=\d+;)?s=", node):
            raise ConfigError(f"--opcua-node {node!r}: a string node id (\"ns=2;s=Cell7.{{stream}}\"): the station "
                              "appends .Decision and .Seq to it")
        netloc = u.hostname + (f":{u.port}" if u.port else "")
        return cls(urlunsplit((u.scheme, netloc, u.path, "", "")), unquote(u.username) if u.username else None,
                   unquote(u.password) if u.password else None, node)

    def nodes(self, stream: str) -> tuple[str, str]:
        base = self.node.replace("{stream}", stream)
        return f"{base}.Decision", f"{base}.Seq"


class OpcUaOut:
    """Writes each stream's latest decision and sequence number to the PLC from a thread; see the module doc."""

    def __init__(self, target: OpcUaTarget, streams: list[str], connect_timeout_s: float = 3.0) -> None:
        self.ua, self._Client = _asyncua()
        self.target, self.streams = target, streams
        self.written = self.superseded = self.missed = 0
        self.connected = threading.Event()
        self._latest: dict[str, tuple[str, int]] = {}
        self._cv = threading.Condition()
        self._closing = False
        self._client: Any = None
        self._nodes: dict[str, tuple[Any, Any, Any, Any]] = {}  # stream -> (decision node, its type, seq, its type)
        self._warned = False
        try:
            self._connect(connect_timeout_s)  # a misconfigured node is refused here, before any frame
        except (OSError, TimeoutError, ConnectionError) as e:
            progress.warn(f"OPC UA server {target.url} not reachable ({type(e).__name__}); inferring on, retrying "
                          f"every {RETRY_S:g} s (decisions meanwhile are counted as missed, not replayed)")
        self._thread = threading.Thread(target=self._loop, daemon=True, name="edgeft-opcua")
        self._thread.start()

    def _connect(self, timeout_s: float) -> None:
        ua = self.ua
        client = self._Client(self.target.url, timeout=timeout_s)
        if self.target.username:
            client.set_user(self.target.username)
            client.set_password(self.target.password or "")
        client.connect()
        nodes = {}
        try:
            for stream in self.streams:
                d_id, s_id = self.target.nodes(stream)
                found = []
                for node_id, kinds in ((d_id, ("String", "Int16", "Int32", "Int64", "UInt16", "UInt32", "Byte")),
                                       (s_id, ("UInt32", "UInt64", "Int32", "Int64"))):
                    node = client.get_node(node_id)
                    try:
                        vt = node.read_data_type_as_variant_type()
                    except ua.UaStatusCodeError as e:
                        raise ConfigError(f"--opcua-node: the server has no variable {node_id} for stream {stream!r} "
                                          f"({e}); create it on the PLC or fix the node id") from None
                    if vt.name not in kinds:
                        raise ConfigError(f"--opcua-node: {node_id} is a {vt.name}; a "
                                          f"{'decision' if node_id == d_id else 'sequence number'} is written as one "
                                          f"of {', '.join(kinds)}")
                    found += [node, vt]
                nodes[stream] = tuple(found)
        except Exception:
            client.disconnect()
            raise
        self._client, self._nodes = client, nodes
        self.connected.set()

    def decision(self, stream: str, line: dict[str, Any], seq: int) -> None:
        """This stream's newest decision; never blocks (an unwritten older one is superseded, and counted)."""
        with self._cv:
            if not self.connected.is_set():
                self.missed += 1
                return
            if stream in self._latest:
                self.superseded += 1
            self._latest[stream] = (str(line.get("decision")), seq)
            self._cv.notify_all()

    def _loop(self) -> None:
        ua = self.ua
        while True:
            with self._cv:
                while not self._latest and not self._closing and self.connected.is_set():
                    self._cv.wait(0.5)
                if self._closing and not self._latest:
                    return
                batch, self._latest = dict(self._latest), {}
            if not self.connected.is_set():
                if self._closing:
                    return
                try:
                    self._connect(RETRY_S)
                    progress.info(f"OPC UA server {self.target.url} connected")
                except ConfigError as e:
                    progress.warn(str(e))
                    time.sleep(RETRY_S)
                except Exception:  # noqa: BLE001: still away
                    time.sleep(RETRY_S)
                continue
            for stream, (decision, seq) in batch.items():
                d, dt, s, st = self._nodes[stream]
                value = decision if dt.name == "String" else CODES.get(decision, -1)
                try:
                    self._client.write_values([d, s], [ua.Variant(value, dt), ua.Variant(seq, st)])
                    with self._cv:
                        self.written += 1
                except Exception as e:  # noqa: BLE001: the server went away
                    with self._cv:
                        self.missed += 1
                    self.connected.clear()
                    progress.warn(f"OPC UA server {self.target.url} went away ({type(e).__name__}); retrying")
                    try:
                        self._client.disconnect()
                    except Exception:  # noqa: BLE001
                        pass
                    break

    def counters(self) -> dict[str, int]:
        with self._cv:
            return {"written": self.written, "superseded": self.superseded, "missed": self.missed}

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join(timeout=10)
        if self.connected.is_set() and self._client is not None:
            try:
                self._client.disconnect()
            except Exception:  # noqa: BLE001
                pass
