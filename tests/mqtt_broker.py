"""A real MQTT broker for the station's tests: amqtt (pure Python, MQTT 3.1.1) on 127.0.0.1:PORT, run as its own
process so a test can stop it and start it again; every message it receives is also appended to a JSON lines file
(topic, payload), which outlives the broker, to count what reached it across a restart.

    python -m tests.mqtt_broker PORT RECORD.jsonl
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from dataclasses import dataclass

from amqtt.broker import Broker
from amqtt.plugins.base import BasePlugin


class Recorder(BasePlugin):
    """Appends each received PUBLISH to the record file."""

    @dataclass
    class Config:
        path: str = ""

    async def on_broker_message_received(self, *, client_id: str, message) -> None:
        with open(self.config.path, "a") as f:
            f.write(json.dumps({"topic": message.topic, "payload": message.data.decode()}) + "\n")


async def main(port: int, record: str) -> None:
    broker = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                     "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
                                 "tests.mqtt_broker.Recorder": {"path": record}}})
    await broker.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
