"""The relay path (issue 13 part 5): `nxs deploy render --relay` renders a hub that joins the mesh with
nats-server's own leafnodes; a client on the hub uses the cluster's JetStream (each message stored once)
and knows it is on the relay from the server's INFO. The netns scenario is in test_relay_netns.py."""

from __future__ import annotations

import collections
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_support import Worker, run_cli, wait_state
from nxs_cli.app import app
from typer.testing import CliRunner

from nxs_mesh import Mesh, MeshConfig, MeshError
from nxs_mesh.client.admin import BucketSpec
from nxs_mesh.deploy.relay import Relay, hub_config, member_leaf_block
from nxs_mesh.deploy.render import DeployOptions
from nxs_mesh.node.lease import BUCKET
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.testing.relay_lab import member_jetstream
from nxs_mesh.transport.connection import ReconnectPolicy, server_path
from nxs_mesh.transport.path_probe import UNACKED_LIMIT, bound_unacked
from nxs_mesh.transport.server import NatsServer, free_port
from nxs_mesh.wire.errors import ConfigError

HOSTS = ["--host", "n1=100.64.0.1", "--host", "n2=100.64.0.2", "--host", "n3=100.64.0.3"]


def test_render_relay_writes_the_hub_and_a_leafnode_port_on_every_host(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    result = CliRunner().invoke(app, ["deploy", "render", *HOSTS, "--relay", "127.0.0.1:8443", "-o", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["relay"] == {"config": str(out / "relay-hub.conf"), "url": "ws://127.0.0.1:8443"}
    hub = (out / "relay-hub.conf").read_text()  # checked by `nats-server -t` (--check is the default)
    assert '"nats://100.64.0.1:7422", "nats://100.64.0.2:7422", "nats://100.64.0.3:7422"' in hub
    assert "jetstream {" not in hub and 'listen: "127.0.0.1:8443"' in hub
    assert 'mappings { "$JS.API.>": "$JS.nxs.API.>", "$KV.>": "$JS.nxs.API.$KV.>" }' in hub
    for name in ("n1", "n2", "n3"):
        conf = (out / f"{name}.conf").read_text()
        assert 'leafnodes {\n  listen: "0.0.0.0:7422"\n}' in conf and '  domain: "nxs"' in conf
        assert (out / f"{name}.env").read_text().splitlines()[1].endswith(",ws://127.0.0.1:8443")
    plain = CliRunner().invoke(app, ["deploy", "render", *HOSTS, "-o", str(tmp_path / "plain")])
    plain_conf = (tmp_path / "plain" / "n1.conf").read_text()
    assert plain.exit_code == 0 and "leafnodes" not in plain_conf and "domain" not in plain_conf


def test_render_relay_with_tls_uses_wss_and_tls_leafnodes(tmp_path: Path) -> None:
    opts = DeployOptions(relay="relay.example.net:443", tls_cert="/etc/nxs/c.pem", tls_key="/etc/nxs/k.pem",
                         tls_ca="/etc/nxs/ca.pem")
    assert opts.relay_hub == Relay("relay.example.net", 443, "wss")
    hub = hub_config(opts.relay_hub, ["100.64.0.1:7422"], tls=['  tls { cert_file: "c" }'], tls_ca="/ca.pem",
                     domain="nxs")
    assert 'listen: "0.0.0.0:443"' in hub and '"tls://100.64.0.1:7422"' in hub and '"/ca.pem"' in hub
    # tls://: the hub's client port with TLS instead of a WebSocket listener (reached by reconnects too)
    tls_relay = DeployOptions(relay="tls://relay.example.net:4443", tls_cert="/c.pem", tls_key="/k.pem").relay_hub
    assert tls_relay is not None and tls_relay.url == "tls://relay.example.net:4443"
    hub = hub_config(tls_relay, ["100.64.0.1:7422"], tls=["  tls {", '    cert_file: "c"', "  }"], tls_ca=None,
                     domain="nxs")
    assert 'listen: "0.0.0.0:4443"\ntls {\n  cert_file: "c"\n}' in hub and "websocket" not in hub


@pytest.mark.parametrize(("relay", "extra", "says"), [
    ("relay.example.net:443", {}, "needs --tls-cert"),
    ("ws://100.64.0.9:80", {}, "loopback only"),
    ("nats://relay.example.net:4222", {}, "or tls:// URL"),
    ("tls://relay.example.net:4443", {}, "needs --tls-cert"),
    ("relay.example.net", {}, "HOST:PORT"),
    ("127.0.0.1:8443", {"secure_dir": "/tmp/nowhere"}, "not rendered yet"),
])
def test_a_bad_relay_is_refused_naming_it(relay: str, extra: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as exc:
        DeployOptions(relay=relay, **extra)  # type: ignore[arg-type]
    assert exc.value.setting == "--relay" and says in str(exc.value)


def test_the_path_comes_from_the_servers_info() -> None:
    servers = ("nats://127.0.0.1:4222", "nats://100.64.0.2:4222", "wss://relay.example.net:443")
    assert server_path(servers, servers[2], jetstream=False) == "relay"
    assert server_path(servers, servers[1], jetstream=False) == "relay"  # whatever the URL
    assert server_path(servers, servers[0], jetstream=False) == "local"  # the local one, misconfigured
    assert server_path(servers, servers[2], jetstream=True) == "peer"  # a member's own websocket
    assert server_path(servers, servers[0], jetstream=True) == "local"
    assert server_path(servers, None, jetstream=True) == "disconnected"


@pytest.fixture
def relayed(tmp_path: Path) -> Iterator[tuple[list[NatsServer], NatsServer, str]]:
    """Three members on loopback, each with a leafnode port, and a hub rendered by ``hub_config`` that
    dials n1 and n3 (the tests stop n2: the hub stays joined, as a relay on another site would)."""
    cluster, leaf_ports = unique_id("rl"), [free_port() for _ in range(3)]
    routes = [free_port() for _ in range(3)]
    members = [NatsServer(name=f"n{i + 1}", store_dir=tmp_path / f"n{i + 1}", cluster_name=cluster,
                          cluster_port=routes[i], routes=[f"nats://127.0.0.1:{p}" for p in routes if p != routes[i]],
                          jetstream=False, extra_conf=member_jetstream(tmp_path / f"n{i + 1}", cluster)
                          + "\n".join(member_leaf_block("127.0.0.1", None, leaf_ports[i])))
               for i in range(3)]
    ws_port = free_port()
    conf = tmp_path / "relay-hub.conf"
    conf.write_text(hub_config(Relay("127.0.0.1", ws_port, "ws"), [f"127.0.0.1:{p}" for p in leaf_ports[::2]],
                               tls=None, tls_ca=None, domain=cluster))
    hub = NatsServer(name="nxs-relay", jetstream=False, config_file=conf)
    started: list[NatsServer] = []
    try:
        for srv in [*members, hub]:
            srv.start()
            started.append(srv)
        yield members, hub, f"ws://127.0.0.1:{ws_port}"
    finally:
        for srv in started:
            srv.stop()


async def test_a_client_on_the_hub_uses_the_clusters_jetstream_and_says_relay(
    relayed: tuple[list[NatsServer], NatsServer, str], tmp_path: Path
) -> None:
    members, _hub, ws_url = relayed
    for srv in members:
        srv.wait_healthy(30)
    to = unique_id("to")
    direct_cfg = MeshConfig(servers=(members[0].url,), instance_id=to, replicas=3)
    async with Mesh(direct_cfg) as direct:
        got: list[int] = []

        async def handler(env: object) -> None:
            got.append(env.content["i"])  # type: ignore[attr-defined]

        await direct.consume("chat", handler)
        assert direct.server_path == "local"
        # No replicas set: on the hub (a "cluster of one" by its INFO) ensure-on-connect must not resize.
        relay_cfg = MeshConfig(servers=(members[1].url, ws_url), instance_id=unique_id("far"))
        members[1].stop()  # this client's direct server is gone: it falls back to the relay listed last
        async with Mesh(relay_cfg) as far:
            assert far.connected_url == ws_url and far.server_path == "relay"
            acks = [await eventually(lambda i=i: _publish(far, to, i), timeout=20, what=f"publish {i} via relay")
                    for i in range(30)]
            # The JetStream API crosses too (the hub maps $JS.API to the members' domain): it consumes.
            mine: list[object] = []

            async def on_mine(env: object) -> None:
                mine.append(env)

            await far.consume("chat", on_mine)
            await far.publish("CHAT", "to myself", to=relay_cfg.instance_id)
            await eventually(lambda: len(mine) == 1, timeout=20, what="a consumer on the relay hub gets it")
        assert [a.duplicate for a in acks] == [False] * 30
        info = await direct.admin.stream("NXS_CHAT")
        assert info is not None and info.replicas == 3  # not shrunk to the hub's "cluster of one"
        await eventually(lambda: sorted(got) == list(range(30)), timeout=20, what="all 30 delivered")
        stored = collections.Counter([rec.envelope.id async for rec in direct.tail("chat", instance=to)])
        assert sorted(stored) == sorted(a.message_id for a in acks) and set(stored.values()) == {1}


async def _publish(mesh: Mesh, to: str, i: int) -> object:
    """One publish; None (try again) while the cluster re-elects after a member stopped."""
    message_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{to}/{i}"))  # the same id on a retry: stored once
    try:
        return await mesh.publish("CHAT", {"i": i}, to=to, message_id=message_id)
    except MeshError:  # JetStream electing after the member stopped: retried by eventually()
        return None



@pytest.mark.timeout(90)
async def test_a_worker_runs_fully_through_the_hub(relayed: tuple[list[NatsServer], NatsServer, str],
                                                   tmp_path: Path) -> None:
    """`nxs node run` on the hub: running, its Doctor holds a lease (a KV write through the leafnode),
    it answers commands (consumer, exactly-once claim in KV, result) and `nxs nodes` says relay."""
    members, _hub, ws_url = relayed
    for srv in members:
        srv.wait_healthy(30)
    node = unique_id("via-hub")
    async with Mesh(MeshConfig(servers=(members[0].url,), instance_id=unique_id("obs"), replicas=3)) as direct:
        # Its direct server listed first is gone (nothing listens there): it joins through the relay.
        gone = f"nats://127.0.0.1:{free_port()}"
        worker = Worker(f"{gone},{ws_url}", node, tmp_path).start()
        try:
            status = await wait_state(direct, node, "running", timeout=30)
            assert status["path"] == "relay", status
            doctors = await direct.admin.bucket(BucketSpec(BUCKET, ttl=86400.0))

            async def holds_a_lease() -> bool:
                values = [await doctors.get(k) for k in await doctors.keys() if k.startswith("doctor.")]
                return any(v is not None and v.value and json.loads(v.value).get("node") == node for v in values)

            await eventually(holds_a_lease, timeout=20, what="the worker on the hub holds a doctor lease")
            reply = await direct.request(node, "echo", {"x": 1}, timeout=15)
            assert reply.content == {"x": 1}
            code, out, err = await run_cli(members[0].url, "nodes")
            row = next((line for line in out.splitlines() if node in line), "")
            assert code == 0 and "running" in row and "relay" in row, out + err
        finally:
            worker.kill()
        assert "no response from stream" not in worker.log(), worker.log()[-2000:]


@pytest.mark.timeout(120)
async def test_the_client_returns_to_its_direct_server_after_the_heal(
    relayed: tuple[list[NatsServer], NatsServer, str], tmp_path: Path
) -> None:
    """Its direct server goes, the client moves to the hub (tls:// or nats://: the same transport), the
    server comes back: the path probe moves it back. Messages both ways arrive once each throughout."""
    members, hub, _ws_url = relayed
    for srv in members:
        srv.wait_healthy(30)
    near_id, far_id = unique_id("near"), unique_id("far")
    near_cfg = MeshConfig(servers=(members[0].url,), instance_id=near_id, replicas=3)
    far_cfg = MeshConfig(servers=(members[1].url, hub.url), instance_id=far_id)
    async with Mesh(near_cfg) as near, Mesh(far_cfg, outbox=tmp_path / "far.sqlite") as far:
        at_near: collections.Counter[int] = collections.Counter()
        at_far: collections.Counter[int] = collections.Counter()

        async def on_near(env: object) -> None:
            at_near[env.content["i"]] += 1  # type: ignore[attr-defined]

        async def on_far(env: object) -> None:
            at_far[env.content["i"]] += 1  # type: ignore[attr-defined]

        await near.consume("chat", on_near)
        await far.consume("chat", on_far)
        sent = 0

        async def exchange(n: int) -> None:  # n messages each way, each retried until acknowledged
            nonlocal sent
            for _ in range(n):
                await eventually(lambda i=sent: _publish(far, near_id, i), timeout=20, what=f"far -> near {sent}")
                await eventually(lambda i=sent: _publish(near, far_id, i), timeout=20, what=f"near -> far {sent}")
                sent += 1

        await exchange(5)
        assert far.server_path == "local"
        members[1].stop()  # far's direct server goes: it reconnects to the hub, listed last
        await eventually(lambda: far.server_path == "relay", timeout=20, what="far moves to the relay")
        await exchange(10)
        members[1].start()  # the heal: the probe finds it serving JetStream again and moves back
        await eventually(lambda: far.server_path == "local", timeout=30, what="far moves back to its direct server")
        assert far.link.path_probe.switches == 1
        await exchange(10)
        assert far.flusher is not None and await far.flusher.wait_empty(20)
        everything = collections.Counter(range(sent))
        await eventually(lambda: at_near == everything and at_far == everything, timeout=30,
                         what=f"every message once each way (near {dict(at_near)}, far {dict(at_far)})")


async def test_a_silent_link_is_bounded_by_tcp_user_timeout(mesh: Mesh) -> None:
    """``bound_unacked`` reaches the socket through nats-py's private ``_transport._bare_io_writer``:
    if nats-py renames it, this fails (and a cut direct link would again take 15 s of pings to leave)."""
    if not hasattr(socket, "TCP_USER_TIMEOUT"):
        pytest.skip("TCP_USER_TIMEOUT is Linux only")
    nc = mesh.link.nc
    assert bound_unacked(nc, 1.5)
    sock = nc._transport._bare_io_writer.get_extra_info("socket")  # type: ignore[union-attr]  # noqa: SLF001
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 1500
    assert bound_unacked(nc) and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == UNACKED_LIMIT * 1000


def test_the_probes_choice_goes_first_whatever_the_pool_order() -> None:
    """nats-py rotates its server pool on each reconnect (the server it left goes last), so listed order
    is gone by the time the probe wants the way back: ``prefer`` puts its server first, the relay last."""
    from types import SimpleNamespace
    from urllib.parse import urlparse

    pool = [SimpleNamespace(uri=urlparse(u)) for u in
            ("nats://100.64.0.2:4222", "tls://relay:4443", "nats://100.64.0.1:4222", "nats://100.64.0.3:4222")]
    policy = ReconnectPolicy()
    policy.prefer("nats://100.64.0.1:4222")
    policy.avoid("relay:4443")
    assert [policy(pool, {})[0].uri.netloc for _ in range(4)] == [
        "100.64.0.1:4222", "100.64.0.2:4222", "100.64.0.3:4222", "relay:4443"]
    policy.reset()  # reconnected: no preference left for the next time
    assert policy(pool, {})[0].uri.netloc == "100.64.0.2:4222"
