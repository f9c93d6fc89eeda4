# examples/mqtt_device.py: a device on the mesh with nothing but an MQTT client (paho-mqtt) and JSON.
"""A small device that joins the mesh over nats-server's MQTT listener (`nxs up --mqtt 1883`).

It speaks the wire contract by hand (no nxs_mesh import), as firmware in any language would:
HEARTBEAT every interval on nxs/heartbeat/<id> and STATUS on nxs/status/<id> (MQTT's "/" is NATS's
"."), COMMANDs from nxs/command/<id>/# and nxs/command/_all/#, RESULTs to the command's reply_to.
MQTT carries no headers (no Nats-Msg-Id, no Nats-TTL), so the envelope's own fields do their work:
the device runs a command once per message_id and never after timestamp + ttl; the Doctor tells
duplicate heartbeats by (epoch, seq); the mesh's consumers dedupe and expire by message_id and ttl.

    python examples/mqtt_device.py --id sensor-1 --port 1883       # Ctrl-C or SIGTERM: a clean stop

On a secure mesh (`nxs up --secure --mqtt 8883 --device sensor-1`) it connects over mqtts:// with its
device certificate (`--tls-dir .nxs/secure/devices/sensor-1`: ca.pem, device.pem, device.key). The
server maps the certificate to the device's user, which may publish only its own heartbeat, status and
RESULTs and read only its own commands (so no broadcasts); receivers accept its unsigned envelopes there.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import secrets
import signal
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt

ID = re.compile(r"[A-Za-z0-9_:-]{1,64}")  # the contract's ids; "." "/" "+" "#" could not be a topic level
RESULT_NAMESPACE = uuid.UUID("6c1f9a52-7d0e-4b8e-9a55-6e1c3c2f6a01")  # RESULT ids: uuid5(ns, "result:<id>")


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def topic(subject: str) -> str:
    return subject.replace(".", "/")  # nxs.result.c-1 -> nxs/result/c-1


class MqttDevice:
    """Heartbeats, status, and commands run once each, answered with RESULTs."""

    def __init__(self, device_id: str, host: str = "127.0.0.1", port: int = 1883, *, interval: float = 1.0,
                 handlers: dict[str, Callable[[Any], Any]] | None = None,
                 tls: tuple[str, str, str] | None = None) -> None:
        """``tls``: (CA, certificate, key) files for mqtts:// with a device certificate (secure mesh)."""
        if not ID.fullmatch(device_id):
            raise ValueError(f"device id {device_id!r}: use 1-64 of A-Z a-z 0-9 _ : -")
        self.id, self.host, self.port, self.interval = device_id, host, port, interval
        self.handlers = {"ping": lambda args: {"pong": args}, **(handlers or {})}
        self.epoch, self.seq = secrets.token_hex(6), 0
        self.last_beat: dict[str, Any] = {}
        self.ran: list[str] = []  # message ids of the commands run, in order
        self.skipped = {"duplicate": 0, "expired": 0, "invalid": 0}
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._beats: threading.Thread | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"nxs-{device_id}")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.tls = tls
        if tls is not None:
            self.client.tls_set(ca_certs=tls[0], certfile=tls[1], keyfile=tls[2])

    def envelope(self, kind: str, content: Any, **fields: Any) -> dict[str, Any]:
        return {"message_id": str(uuid.uuid4()), "timestamp": now(),
                "source": {"instance_id": self.id, "agent_id": "main", "location": "mqtt"},
                "target": {"instance_id": "*", "agent_id": "*", "broadcast": True}, "message_type": kind,
                "payload": {"content": content, "metadata": {}}, "priority": 1, "ttl": 0, "v": 1, **fields}

    def send(self, subject: str, env: dict[str, Any], qos: int = 1, *, wait: bool = True) -> None:
        """Publish; ``wait`` for the broker's PUBACK (never inside a paho callback: that thread sends it)."""
        info = self.client.publish(topic(subject), json.dumps(env), qos=qos)
        if wait:
            info.wait_for_publish(5)

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> MqttDevice:
        """Connect, subscribe to its commands, publish STATUS and the first heartbeat; returns when ready."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._ready.wait(timeout):
            self.client.loop_stop()
            raise TimeoutError(f"no MQTT session with {self.host}:{self.port} within {timeout}s")
        self.send(f"nxs.status.{self.id}", self.envelope("STATUS", self.status("running")))
        self.beat()
        self._beats = threading.Thread(target=self._beat_loop, name=f"beats {self.id}", daemon=True)
        self._beats.start()
        return self

    def status(self, state: str) -> dict[str, Any]:
        """What `nxs nodes` shows of the device (STATUS content; a node's has more, all optional)."""
        return {"state": state, "epoch": self.epoch, "heartbeat_interval": self.interval, "path": "mqtt",
                "server": self.url, "commands": sorted(self.handlers)}

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def beat(self) -> dict[str, Any]:
        """One HEARTBEAT (QoS 0: a lost one is replaced next interval); returns it (tests re-send it)."""
        self.seq += 1
        env = self.envelope("HEARTBEAT", {"epoch": self.epoch, "seq": self.seq, "state": "running"})
        self.send(f"nxs.heartbeat.{self.id}", env, qos=0)
        self.last_beat = env
        return env

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def stop(self, *, clean: bool = True) -> None:
        """Stop beating; ``clean`` says so first (STATUS "stopped": no death alert). Unclean is a death."""
        self._stop.set()
        if self._beats is not None:
            self._beats.join()
        if clean:
            self.send(f"nxs.status.{self.id}", self.envelope("STATUS", self.status("stopped")))
        self.client.disconnect()
        self.client.loop_stop()

    # -- commands -------------------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            raise ConnectionError(f"MQTT connect refused: {reason}")
        own = [(f"nxs/command/{self.id}/#", 1)]  # a secure device may read its own commands only
        client.subscribe(own if self.tls else [*own, ("nxs/command/_all/#", 1)])

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            env = json.loads(msg.payload)
            mid, content = env["message_id"], env["payload"]["content"]
            sent = datetime.fromisoformat(env["timestamp"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError, AttributeError):
            self.skipped["invalid"] += 1
            return
        if mid in self._seen:  # the same message twice (a re-publish, a retried send): run it once
            self.skipped["duplicate"] += 1
            return
        self._seen[mid] = None
        if len(self._seen) > 1000:
            self._seen.popitem(last=False)
        ttl = env.get("ttl", 300)
        if ttl and datetime.now(UTC).timestamp() >= sent + ttl:  # by the sender's clock: keep the clock set
            self.skipped["expired"] += 1
            return
        self.run(env, content)

    def run(self, env: dict[str, Any], content: Any) -> None:
        name = content.get("command") if isinstance(content, dict) else None
        handler = self.handlers.get(name) if isinstance(name, str) else None
        self.ran.append(env["message_id"])
        result, error = None, None
        try:
            if handler is None:
                raise LookupError(f"no command {name!r} on {self.id}")
            result = handler(content.get("args"))
        except Exception as exc:  # noqa: BLE001 - a failed command is answered, not fatal
            error = f"{type(exc).__name__}: {exc}"
        corr = env.get("correlation_id") or env["message_id"]
        answer = self.envelope("RESULT", result, correlation_id=corr, ttl=env.get("ttl", 300),
                               message_id=str(uuid.uuid5(RESULT_NAMESPACE, f"result:{env['message_id']}")),
                               target={"instance_id": env["source"]["instance_id"],
                                       "agent_id": env["source"]["agent_id"], "broadcast": False})
        answer["payload"]["metadata"] = {"ok": error is None, "command": name, **({"error": error} if error else {})}
        self.send(env.get("reply_to") or f"nxs.result.{corr}", answer, wait=False)  # on paho's thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--id", default="sensor-1", help="device id (its instance_id on the mesh)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883, help="nats-server's MQTT port (`nxs up --mqtt`)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between heartbeats")
    parser.add_argument("--tls-dir", help="secure mesh: the device's directory (ca.pem, device.pem, device.key)")
    args = parser.parse_args()
    d = args.tls_dir
    tls = (f"{d}/ca.pem", f"{d}/device.pem", f"{d}/device.key") if d else None
    device = MqttDevice(args.id, args.host, args.port, interval=args.interval, tls=tls,
                        handlers={"read": lambda _args: {"temperature_c": 21.5}})
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # explicit: a background job may start with SIGINT ignored
        signal.signal(sig, lambda *_: done.set())
    device.start()
    print(f"{args.id} on the mesh via {device.url}; try `nxs nodes`, `nxs cmd {args.id} read`", flush=True)
    while not done.wait(1.0):  # a timeout keeps the main thread responsive to signals
        pass
    device.stop(clean=True)
    print("stopped cleanly", flush=True)


if __name__ == "__main__":
    main()
