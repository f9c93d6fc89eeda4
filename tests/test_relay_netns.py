"""The relay path in network namespaces (issue 13 part 5): three hosts on 100.64.<s>.0/24 (eth0, their
direct links) and a relay hub on a second LAN (eth1) that dials the members' leafnode ports with TLS.
An agent on h3 publishes to the cluster; h3's direct links are cut: it moves to the hub (tls://) and
keeps storing with nothing lost or duplicated. Needs root and iproute2; skipped with the reason elsewhere."""

from __future__ import annotations

import collections
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_netns import Proc, _settled, _spawn

from nxs_mesh import Mesh, MeshConfig
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.testing.netns import NetnsLab, netns_unavailable, run_in_netns
from nxs_mesh.testing.relay_lab import CLIENT, RELAY, RelayLink, lab_certificate
from nxs_mesh.testing.relay_lab import relay_servers as relay_lab_servers
from nxs_mesh.transport.server import NatsServer

pytestmark = pytest.mark.netns

_REASON = netns_unavailable()


@pytest.fixture
def relay_lab(tmp_path: Path) -> Iterator[tuple[NetnsLab, RelayLink, Path]]:
    if _REASON:
        pytest.skip(_REASON)
    with NetnsLab(3) as lab, RelayLink(lab) as link:
        cert, _key = lab_certificate(tmp_path, link.addresses())
        yield lab, link, cert


@pytest.fixture
def relay_servers(relay_lab: tuple[NetnsLab, RelayLink, Path], tmp_path: Path) -> Iterator[list[NatsServer]]:
    """The members (leafnode port on eth1, TLS) and the hub (tls://, no JetStream), from deploy.relay."""
    lab, link, cert = relay_lab
    servers = relay_lab_servers(lab, link, cert, tmp_path / "servers", cluster=unique_id("rly"))
    started: list[NatsServer] = []
    try:
        for srv in servers:
            srv.start()
            started.append(srv)
        yield servers
    finally:
        for srv in started:
            srv.stop()


@pytest.mark.timeout(150)
def test_cut_host_keeps_storing_through_the_relay(relay_lab: tuple[NetnsLab, RelayLink, Path],
                                                   relay_servers: list[NatsServer], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    lab, link, cert = relay_lab
    h1, h2, h3 = lab.hosts
    to = unique_id("relay")
    # tls://, not wss://: nats-py reconnects within the transport it joined (TCP here), see deploy.relay.
    relay_url = f"tls://{link.hub_address}:{RELAY}"
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the agent trusts the lab certificate
    figures: dict[str, Any] = {}

    async def scenario() -> None:  # runs inside h1
        for srv in relay_servers[:3]:
            srv.wait_healthy(40)
        observer = await Mesh(MeshConfig(servers=(f"nats://{h1.address}:{CLIENT}",), instance_id=unique_id("obs"),
                                         replicas=3)).connect()
        servers = f"nats://{h1.address}:{CLIENT},nats://{h2.address}:{CLIENT},{relay_url}"
        agent: Proc = await _spawn(h3, [
            sys.executable, "-m", "nxs_mesh.testing.netns", "agent", "--servers", servers, "--id", f"{to}-agent",
            "--to", to, "--outbox", str(tmp_path / "outbox-h3.sqlite"), "--interval", "0.05"], "agent-h3", tmp_path)
        try:
            await eventually(lambda: agent.count("queued", False) >= 10, timeout=40, what="h3 stores directly")
            assert agent.lines[0]["path"] == "local"  # h1, first listed
            lab.cut(h3)
            t_cut = time.monotonic()
            await eventually(lambda: agent.first(t_cut, path="relay") is not None, timeout=60,
                             what="h3's agent moves to the relay")
            t_relay = agent.first(t_cut, path="relay") or t_cut
            figures["moved_to_relay_after_cut_s"] = round(t_relay - t_cut, 2)
            await eventually(lambda: agent.count("queued", False, t_relay) >= 20, timeout=40,
                             what="h3 stores through the relay")
            lab.heal(h3)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; agent said {agent.text[-8:]}") from None
        finally:
            await agent.stop()
        assert any(d.get("done") and d.get("drained") for d in agent.lines), agent.text[-5:]
        acknowledged = [d["id"] for d in agent.lines if "id" in d]

        async def chat_ids() -> collections.Counter[str]:
            return collections.Counter([rec.envelope.id async for rec in observer.tail("chat", instance=to)])

        # Right after the heal the streams may re-elect (h3 rejoins) and a read may come back empty: read
        # until two reads agree and hold every acknowledged message (a lost one fails here after 40s).
        found = await _settled(chat_ids, accept=lambda c: all(c[m] for m in acknowledged), timeout=40,
                               what="every acknowledged message read back, twice the same")
        await observer.close()
        figures.update(acknowledged=len(acknowledged), via_relay=agent.count("queued", False, t_relay),
                       queued=agent.count("queued", True), found=sum(found.values()))
        missing = [m for m in acknowledged if found[m] == 0]
        queued = {d["id"] for d in agent.lines if d.get("queued")}
        assert not missing, (f"{len(missing)} acknowledged messages missing ({sum(m in queued for m in missing)} "
                             f"of them queued first): {figures}")
        assert not {m: c for m, c in found.items() if c > 1}, "duplicates in the stream"

    try:
        run_in_netns(h1.ns, scenario, timeout=140)
    except AssertionError as exc:  # the agent's own words help more than a timeout
        log = (tmp_path / "agent-h3.log").read_text()[-1500:] if (tmp_path / "agent-h3.log").exists() else ""
        raise AssertionError(f"{exc}\nagent log: {log}") from None
    print(f"\nRELAY netns figures: {json.dumps(figures)}")
