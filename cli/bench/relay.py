"""The relay path against the direct route, in the netns lab (issue 13 part 5).

Three hosts in network namespaces with the relay hub on its own LAN (``nxs_mesh.testing.relay_lab``,
as in ``tests/test_relay_netns.py``). From inside the last host, the same Mesh publishes -> consumes one
message at a time twice: over the direct route to h1 (the anchor, ``raw``) and through the hub
(``tls://``, leafnode to h1/h2; ``mesh`` column), so the ratio is relay / direct. Needs root and
iproute2 (skipped with the reason elsewhere); run by name: ``nxs bench relay``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from nxs_cli.bench.edges import _latency
from nxs_cli.bench.report import Row, skipped
from nxs_cli.bench.session import BenchSession
from nxs_cli.bench.stats import percentile

from nxs_mesh import Mesh, MeshConfig, MeshError
from nxs_mesh.aio.waiting import wait_until
from nxs_mesh.testing.netns import NetnsLab, netns_unavailable, run_in_netns
from nxs_mesh.testing.relay_lab import CLIENT, RELAY, RelayLink, lab_certificate, relay_servers

__all__ = ["bench_relay"]


async def bench_relay(session: BenchSession) -> list[Row]:
    if (reason := netns_unavailable()) is not None:
        return [skipped("relay", "publish -> handler", reason)]
    return await asyncio.to_thread(_in_lab, session)


def _in_lab(session: BenchSession) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="nxs-bench-relay-") as tmp, NetnsLab(3) as lab, \
            RelayLink(lab) as link:
        cert, _key = lab_certificate(Path(tmp), link.addresses())
        servers = relay_servers(lab, link, cert, Path(tmp) / "servers", cluster=f"bench-{session.run_id}")
        old = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = str(cert)  # the client trusts the lab certificate for tls://
        try:
            for srv in servers:
                srv.start()
            direct_url, relay_url = f"nats://{lab.hosts[0].address}:{CLIENT}", f"tls://{link.hub_address}:{RELAY}"

            async def both() -> tuple[list[float], list[float]]:  # inside the last host
                for srv in servers[:3]:  # blocking is fine: nothing else runs on this loop yet
                    srv.wait_healthy(40)  # (monitoring is reachable inside the lab only)
                await wait_until(lambda: _streams_made(direct_url), 40, "the mesh streams in the lab")
                direct = await _latency(session, direct_url, Path(tmp))
                await wait_until(lambda: _streams_made(relay_url, ensure=False), 40, "JetStream through the hub")
                return direct, await _latency(session, relay_url, Path(tmp), ensure=False)

            direct, relayed = run_in_netns(lab.hosts[-1].ns, both, timeout=300)
        finally:
            for srv in servers:
                srv.stop()
            if old is None:
                os.environ.pop("SSL_CERT_FILE", None)
            else:
                os.environ["SSL_CERT_FILE"] = old
    rows = [Row("relay publish -> handler", f"p{q} us", percentile(relayed, q) * 1e6, percentile(direct, q) * 1e6,
                higher_is_better=False) for q in (50, 99)]
    rows[0] = replace(rows[0], note="netns lab: mesh column through the relay hub (tls://, leafnode); raw: direct")
    return rows


async def _streams_made(url: str, *, ensure: bool = True) -> bool:
    """Create the mesh streams (``ensure=False``: find them) once JetStream answers on ``url``; False:
    not yet, try again (the new cluster elects, the hub's leafnode comes up a moment later)."""
    try:
        async with Mesh(MeshConfig(servers=(url,), instance_id="bench-relay"), ensure=False) as mesh:
            if ensure:
                await mesh.ensure_streams()
            elif await mesh.admin.stream("NXS_CHAT") is None:
                return False
    except MeshError:
        return False
    return True
