"""The Mesh client's edges: errors translated at the boundary, lifecycle, streams ensure, config."""

import subprocess
import sys

import nats
import pytest
from nats.js import api as jsapi

import nxs_mesh
from nxs_mesh import (
    ClosedError,
    ConfigError,
    ConnectError,
    EnvelopeError,
    Mesh,
    MeshConfig,
    MeshError,
    MeshTimeout,
    NotConnectedError,
    RemoteError,
)
from nxs_mesh.config import load_config
from nxs_mesh.transport.server import NatsServer, free_port
from nxs_mesh.transport.streams import STREAMS


async def test_unreachable_server_is_a_connect_error():
    cfg = MeshConfig(servers=(f"nats://127.0.0.1:{free_port()}",), instance_id="n1", connect_timeout=0.5)
    with pytest.raises(ConnectError) as exc:
        await Mesh(cfg).connect()
    assert "nxs up" in str(exc.value)
    assert not isinstance(exc.value, nats.errors.Error)


async def test_lifecycle_states(mesh_config):
    m = Mesh(mesh_config)
    with pytest.raises(NotConnectedError):
        await m.publish("CHAT", "x")
    async with m:
        assert "OPEN" in repr(m)
    with pytest.raises(ClosedError):
        await m.publish("CHAT", "x")
    with pytest.raises(ClosedError):
        await m.connect()


async def test_a_stopped_consumer_is_not_kept_by_the_mesh(mesh: Mesh):
    async def handler(env):
        return None

    first = await mesh.consume("chat", handler, durable="kept-first")
    await first.stop()
    second = await mesh.consume("chat", handler, durable="kept-second")
    assert "1 consumers" in repr(mesh)  # the stopped one was dropped, the running one kept
    await second.stop()


async def test_publish_rejects_bad_input_naming_the_field(mesh: Mesh):
    with pytest.raises(EnvelopeError, match="target.instance_id"):
        await mesh.publish("CHAT", "x", to="no spaces allowed")
    with pytest.raises(EnvelopeError, match="priority"):
        await mesh.publish("CHAT", "x", priority=42)
    with pytest.raises(EnvelopeError, match="message_type"):
        await mesh.publish("BOGUS", "x")
    with pytest.raises(EnvelopeError, match="payload.content"):
        await mesh.publish("CHAT", object())


async def test_missing_streams_surface_as_mesh_errors(mesh_config):
    async with Mesh(mesh_config, ensure=False) as m:
        with pytest.raises(MeshError) as exc:
            await m.publish("CHAT", "x")
        assert not isinstance(exc.value, nats.errors.Error)


async def test_request_timeout_and_remote_error(mesh: Mesh, mesh_factory):
    with pytest.raises(MeshTimeout, match="no reply from ghost"):
        await mesh.request("ghost", "ping", timeout=0.3)
    other = await mesh_factory(instance_id="responder")

    async def on_cmd(env):
        await other.reply(env, error=f"unknown command {env.content['command']!r}")

    await other.consume("command", on_cmd)
    with pytest.raises(RemoteError, match="responder: unknown command 'frobnicate'"):
        await mesh.request("responder", "frobnicate", timeout=5)


async def test_ensure_is_idempotent_updates_and_reports_conflicts(nats_server):
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        # An older config of ours (shorter max_age) and a conflicting one (wrong retention).
        await js.add_stream(name="NXS_CHAT", subjects=["nxs.chat.>"], max_age=3600)
        await js.add_stream(name="NXS_TASK", subjects=["nxs.task.>"], retention=jsapi.RetentionPolicy.LIMITS)
        async with Mesh(MeshConfig(servers=(nats_server.url,), instance_id="ensurer"), ensure=False) as mesh:
            first = {r.stream: r for r in await mesh.ensure_streams()}
            assert first["NXS_CHAT"].action == "updated" and "max_age" in first["NXS_CHAT"].detail
            assert first["NXS_TASK"].action == "conflict" and "retention" in first["NXS_TASK"].detail
            assert first["NXS_COMMAND"].action == "created"
            await js.delete_stream("NXS_TASK")
            await mesh.ensure_streams()
            again = await mesh.ensure_streams()
            assert {r.action for r in again} == {"unchanged"} and len(again) == len(STREAMS)
    finally:
        await nc.close()


def test_port_in_use_is_reported(nats_server):
    with pytest.raises(nxs_mesh.PortInUse, match=f"port {nats_server.port}.*--port"):
        NatsServer(port=nats_server.port).start()


def test_config_precedence(tmp_path):
    toml = tmp_path / "nxs.toml"
    toml.write_text('instance_id = "from-file"\nagent_id = "file-agent"\nlocation = "file-loc"\n')
    env = {"NXS_CONFIG": str(toml), "NXS_AGENT_ID": "env-agent", "NXS_LOCATION": "env-loc",
           "NXS_URL": "nats://a:1,nats://b:2"}
    cfg, src = load_config({"location": "flag-loc"}, env=env)
    assert (cfg.instance_id, cfg.agent_id, cfg.location) == ("from-file", "env-agent", "flag-loc")
    assert cfg.servers == ("nats://a:1", "nats://b:2")
    assert src["instance_id"] == f"file:{toml}" and src["agent_id"] == "env:NXS_AGENT_ID"
    assert src["location"] == "flag" and src["ack_wait"] == "default"


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"NXS_INSTANCE_ID": "bad id"}, "instance_id"),
        ({"NXS_REPLICAS": "seven"}, "replicas"),
        ({"NXS_URL": "localhost"}, "servers"),
        ({"NXS_CONFIG": "/nonexistent.toml"}, "NXS_CONFIG"),
    ],
)
def test_config_errors_name_the_setting(env, setting):
    with pytest.raises(ConfigError) as exc:
        load_config(env=env)
    assert setting in str(exc.value)


def test_public_names_match_all():
    for name in nxs_mesh.__all__:
        assert hasattr(nxs_mesh, name), name
    classes = {n for n, v in vars(nxs_mesh).items() if isinstance(v, type) and not n.startswith("_")}
    assert classes <= set(nxs_mesh.__all__), classes - set(nxs_mesh.__all__)


def test_error_tree_has_one_root():
    for name in nxs_mesh.__all__:
        obj = getattr(nxs_mesh, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and name not in ("Retry", "Reject", "Abandon"):
            assert issubclass(obj, MeshError), name


def test_library_does_not_import_cli_dependencies():
    # typer and rich are made unimportable first: every library module must import without them. (Only
    # checking sys.modules afterwards would blame httpx, which the A2A SDK imports: httpx loads its own
    # CLI, and so rich, whenever rich is installed, and falls back quietly when it is not.)
    code = (
        "import sys, pkgutil, importlib\n"
        "sys.modules.update(typer=None, rich=None)\n"
        "import nxs_mesh\n"
        "for m in pkgutil.walk_packages(nxs_mesh.__path__, 'nxs_mesh.'):\n"
        "    if m.name != 'nxs_mesh.testing': importlib.import_module(m.name)\n"
        "bad = [m for m in ('typer', 'rich') if sys.modules.get(m) is not None]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
