"""Node commands: node run, nodes, status, cmd, ping, alerts, doctor (check / run), top, demo."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any

import typer

from nxs_mesh.wire.errors import MeshError

from .common import console, fail, new_typer, print_json, priority_option, run, settings

# NB: the library is imported inside the commands, so `nxs --help` stays fast.

node_app = new_typer(help="The long-running worker (one per node).", no_args_is_help=True)
doctor_app = new_typer(help="Mesh health: a one-shot check, or `doctor run` to watch and alert.",
                       invoke_without_command=True)

JSON_OPT = typer.Option(False, "--json", help="Machine-readable output (one JSON document).")


def _parse_value(text: str) -> Any:
    """A CLI argument as JSON when it parses (numbers, lists, objects), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _set_root(ctx: typer.Context, **flags: Any) -> None:
    """Let subcommand options (node run --id ...) override the global ones before settings resolve."""
    obj = ctx.find_root().obj
    if isinstance(obj, dict):
        for key, value in flags.items():
            if value is not None:
                if key == "config_file":
                    obj["config_file"] = value
                else:
                    obj["flags"][key] = value


def _mesh(ctx: typer.Context, *, ensure: bool = True, agent: str | None = None) -> Any:
    from nxs_mesh import Mesh

    cfg = settings(ctx).config
    if agent is not None:
        cfg = cfg.replace(agent_id=agent)
    return Mesh(cfg, ensure=ensure)


# -- node run ------------------------------------------------------------------------------------------
@node_app.command("run")
def node_run(
    ctx: typer.Context,
    node_id: str = typer.Option(None, "--id", help="This node's id (default: --instance-id / NXS_INSTANCE_ID / host name)."),
    location: str = typer.Option(None, "--location", help="Where it runs, e.g. vps-singapore."),
    config_file: str = typer.Option(None, "--config", "-c", help="TOML config file."),
    handlers: list[str] = typer.Option([], "--handlers", help="User handlers: module:object (repeatable)."),
    capability: list[str] = typer.Option([], "--capability", "-C", help="Task capability to take (repeatable)."),
    agent: list[str] = typer.Option([], "--agent", "-a", help="Agent this node runs, registered in NXS_AGENTS "
                                                             "(repeatable; see `nxs agents`)."),
    heartbeat: float = typer.Option(None, "--heartbeat", envvar="NXS_HEARTBEAT_INTERVAL", help="Heartbeat interval (s) [1]."),
    dead_after: float = typer.Option(None, "--dead-after", envvar="NXS_DEAD_AFTER", help="Doctor: dead after this silence (s) [5]."),
    grace: float = typer.Option(None, "--grace", help="On SIGTERM, how long in-flight work may take (s) [10]."),
    task_ack_wait: float = typer.Option(None, "--task-ack-wait", help="Ack wait of task deliveries (s) [30]."),
    doctor: bool = typer.Option(None, "--doctor/--no-doctor", help="Run the Doctor in this worker [yes]."),
    plugins: bool = typer.Option(True, "--plugins/--no-plugins", help="Load nxs_mesh.node.handlers entry points."),
    handoff: bool = typer.Option(None, "--handoff/--no-handoff",
                                 help="Give and take agents by handoff (`nxs handoff`) [yes; no on a secure mesh]."),
    max_agents: int = typer.Option(0, "--max-agents", help="Handoff: refuse offers beyond this many agents (0 = no limit)."),
    sap: bool = typer.Option(False, "--sap", help="Serve its agents over the Synadia Agent Protocol (`nxs prompt`)."),
    log_level: str = typer.Option("INFO", "--log-level", help="Log level on stderr."),
) -> None:
    """Run the worker: heartbeat + status, commands, tasks, the Doctor; SIGTERM drains and exits 0.

    Worker settings may also sit in the config file's [node] table (heartbeat_interval, dead_after,
    grace, task_ack_wait, doctor, capabilities, agents, handlers); flags and environment win over it.
    """
    from nxs_mesh.node.handlers import Registry, load_handlers
    from nxs_mesh.node.node import Node
    from nxs_mesh.node.worker import add_sap, build_options, read_node_table, with_handoff

    _set_root(ctx, instance_id=node_id, location=location, config_file=config_file)
    root = ctx.find_root().obj
    explicit = root.get("config_file") if isinstance(root, dict) else None
    st = settings(ctx)
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    given = {"heartbeat_interval": heartbeat, "dead_after": dead_after, "grace": grace,
             "task_ack_wait": task_ack_wait, "doctor": doctor, "capabilities": tuple(capability) or None,
             "agents": tuple(agent) or None}
    try:
        options, file_handlers = build_options(read_node_table(explicit), given)
        registry = load_handlers(Registry(), [*file_handlers, *handlers], plugins=plugins)
    except MeshError as exc:
        fail(str(exc), debug=st.debug, exc=exc)
    node = add_sap(with_handoff(Node(st.config, options, registry), handoff, max_agents), sap)

    def ready(n: Node) -> None:
        sys.stdout.write(f"ready node={n.node_id} epoch={n.epoch} server={n.mesh.connected_url if n.mesh else '-'}\n")
        sys.stdout.flush()

    run(node.serve(on_ready=ready), debug=st.debug)


# -- presence ------------------------------------------------------------------------------------------
def nodes(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """List nodes: location, state, last heartbeat age, load, version, server."""
    from nxs_mesh.node.checkup import list_nodes

    from .node_views import nodes_table

    async def go() -> list[Any]:
        async with _mesh(ctx) as mesh:
            return await list_nodes(mesh)

    views = run(go(), debug=settings(ctx).debug)
    if as_json:
        print_json([v.as_dict() for v in views])
    else:
        console.print(nodes_table(views))


def status(ctx: typer.Context, node: str = typer.Argument(..., help="Node id."), as_json: bool = JSON_OPT) -> None:
    """The last status a node published (and its liveness)."""
    from nxs_mesh.node.checkup import list_nodes

    async def go() -> list[Any]:
        async with _mesh(ctx) as mesh:
            return [v for v in await list_nodes(mesh) if v.node == node]

    found = run(go(), debug=settings(ctx).debug)
    if not found:
        fail(f"no status from {node!r} (see `nxs nodes`)")
    view = found[0]
    if as_json:
        print_json({**view.status, "node": view.node, "state": view.state, "heartbeat_age": view.heartbeat_age})
        return
    for key, value in {"node": view.node, "state": view.state, "heartbeat age": view.heartbeat_age,
                       **{k: v for k, v in view.status.items() if k != "state"}}.items():
        console.print(f"[bold]{key:>18}[/]  {value}", highlight=False)


# -- commands ------------------------------------------------------------------------------------------
async def _check_listed(mesh: Any, node: str) -> None:
    """Fail at once when nothing could answer, instead of waiting out the timeout: the node (or, for '*',
    any node) never published a status or heartbeat. A listed node that is down still gets the command:
    it waits in the node's durable queue until the node returns or the command expires."""
    from nxs_mesh.node.checkup import list_nodes

    listed = {v.node for v in await list_nodes(mesh)}
    if node == "*" and not listed:
        raise MeshError("no node in the mesh yet (`nxs nodes` lists none): start one with `nxs node run`")
    if node != "*" and node not in listed:
        raise MeshError(f"no node {node!r} in the mesh (it never published a status): see `nxs nodes`")


def cmd(
    ctx: typer.Context,
    node: str = typer.Argument(..., help="Node id, or '*' for every node (first answer wins)."),
    command: str = typer.Argument(..., help="Command name, e.g. ping, status, echo, sleep."),
    args: list[str] = typer.Argument(None, help="Arguments (JSON values, or strings)."),
    timeout: float = typer.Option(10.0, "--timeout", "-t", help="Seconds to wait for the result."),
    priority: int = priority_option(5),
    as_json: bool = JSON_OPT,
) -> None:
    """Send a command and print its result; exit 1 on a remote error or timeout, and at once when the
    node is not in `nxs nodes` (nothing would answer)."""
    values = [_parse_value(a) for a in args or []]
    payload = None if not values else values[0] if len(values) == 1 else values

    async def go() -> Any:
        async with _mesh(ctx) as mesh:
            await _check_listed(mesh, node)
            return await mesh.request(node, command, payload, timeout=timeout, priority=priority)

    env = run(go(), debug=settings(ctx).debug)
    if as_json:
        print_json({"node": env.source.instance_id, "result": env.content})
    elif isinstance(env.content, str):
        console.print(env.content, highlight=False)
    else:
        console.print_json(json.dumps(env.content, default=str))


def ping(
    ctx: typer.Context,
    node: str = typer.Argument(..., help="Node id."),
    count: int = typer.Option(1, "--count", "-n", min=1),
    timeout: float = typer.Option(5.0, "--timeout", "-t"),
    as_json: bool = JSON_OPT,
) -> None:
    """Round-trip time of a `ping` command (publish -> worker -> RESULT)."""

    async def go() -> list[float]:
        times = []
        async with _mesh(ctx) as mesh:
            await _check_listed(mesh, node)
            for _ in range(count):
                t0 = time.perf_counter()
                await mesh.request(node, "ping", None, timeout=timeout)
                times.append((time.perf_counter() - t0) * 1000)
        return times

    times = run(go(), debug=settings(ctx).debug)
    if as_json:
        print_json({"node": node, "rtt_ms": [round(t, 3) for t in times]})
    else:
        for t in times:
            console.print(f"pong from {node}: {t:.1f} ms", highlight=False)


# -- alerts --------------------------------------------------------------------------------------------
def alerts(
    ctx: typer.Context,
    follow: bool = typer.Option(False, "--follow/--no-follow", "-f", help="Keep printing new alerts."),
    last: int = typer.Option(None, "--last", "-n", help="Only the last N stored alerts."),
    node: str = typer.Option(None, "--node", help="Only alerts about this node."),
    exec_cmd: str = typer.Option(None, "--exec", help="Hook: run this shell command per alert (JSON on stdin)."),
    post: str = typer.Option(None, "--post", help="Hook: POST each alert as JSON to this URL."),
    new_only: bool = typer.Option(False, "--new", help="Skip stored alerts (hooks usually want this)."),
    as_json: bool = JSON_OPT,
) -> None:
    """The Doctor's alerts (deaths and recoveries); with --exec/--post, call a hook per alert."""
    from datetime import UTC, datetime

    from nxs_mesh.node.alerts import AlertHook, read_alerts

    from .node_views import alerts_table

    hook = AlertHook(exec_cmd, post) if (exec_cmd or post) else None
    since = datetime.now(UTC) if new_only else None

    async def go() -> list[dict[str, Any]]:
        got = []
        async with _mesh(ctx) as mesh:
            async for item in read_alerts(mesh, node=node, last=last, since=since, follow=follow):
                if as_json:
                    print_json(item)
                elif follow:
                    console.print(alerts_table([item], header=False))
                else:
                    got.append(item)
                if hook is not None:
                    await hook.fire(item)
        return got

    items = run(go(), debug=settings(ctx).debug)
    if not as_json and not follow:
        console.print(alerts_table(items) if items else "no alerts")


# -- doctor --------------------------------------------------------------------------------------------
@doctor_app.callback()
def doctor_check(
    ctx: typer.Context,
    dead_after: float = typer.Option(None, "--dead-after", help="Dead after this heartbeat age (default: each node's own)."),
    as_json: bool = JSON_OPT,
) -> None:
    """One-shot health check: servers, JetStream, streams, consumer lag, dead letters, dead nodes.

    Exit code 0 healthy, 1 degraded, 2 down.
    """
    if ctx.invoked_subcommand is not None:
        return
    from nxs_mesh.node.checkup import Health, HealthReport, check_mesh
    from nxs_mesh.wire.errors import ConnectError

    async def go() -> HealthReport:
        try:
            mesh = await _mesh(ctx, ensure=False).connect()
        except ConnectError as exc:
            report = HealthReport(Health.DOWN)
            report.add("server", "fail", str(exc))
            report.health = Health.DOWN
            return report
        try:
            return await check_mesh(mesh, dead_after=dead_after)
        finally:
            await mesh.close()

    report = run(go(), debug=settings(ctx).debug)
    if as_json:
        print_json(report.as_dict())
    else:
        from .node_views import health_table

        console.print(health_table(report))
    raise typer.Exit(int(report.health))


@doctor_app.command("run")
def doctor_run(
    ctx: typer.Context,
    dead_after: float = typer.Option(5.0, "--dead-after", envvar="NXS_DEAD_AFTER"),
    interval: float = typer.Option(1.0, "--heartbeat", envvar="NXS_HEARTBEAT_INTERVAL", help="Nodes' heartbeat interval."),
    log_level: str = typer.Option("INFO", "--log-level"),
) -> None:
    """Watch heartbeats alone (no worker): alerts on deaths/recoveries, releases dead nodes' tasks."""
    from nxs_mesh.node.agents import orphan_hook
    from nxs_mesh.node.doctor import Doctor
    from nxs_mesh.node.tasks import TaskStore

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with _mesh(ctx, agent="doctor") as mesh:
            doc = await Doctor(mesh, dead_after=dead_after, interval=interval, store=await TaskStore.open(mesh),
                               death_hooks=(orphan_hook(mesh),)).start()
            sys.stdout.write(f"ready doctor={mesh.config.instance_id}\n")
            sys.stdout.flush()
            try:
                await stop.wait()
            finally:
                await doc.stop()

    run(go(), debug=settings(ctx).debug)


def top(
    ctx: typer.Context,
    interval: float = typer.Option(1.0, "--interval", "-i", help="Refresh every N seconds."),
    iterations: int = typer.Option(0, "--iterations", help="Stop after N refreshes (0 = until Ctrl-C)."),
) -> None:
    """A live view of nodes and message rates."""
    from .node_views import top_loop

    async def go() -> None:
        async with _mesh(ctx) as mesh:
            await top_loop(mesh, interval=interval, iterations=iterations)

    run(go(), debug=settings(ctx).debug)


def demo(
    ctx: typer.Context,
    keep: bool = typer.Option(False, "--keep", help="Keep the temporary server's store directory."),
) -> None:
    """Scripted local scenario: three nodes, a chat, a command, a task, a node killed, the alert,
    the task finished elsewhere. Uses --url if given, else starts its own temporary server."""
    from .node_demo import run_demo

    st = settings(ctx)
    url = st.config.servers[0] if st.sources.get("servers") != "default" else None
    code = run(run_demo(url, keep=keep), debug=st.debug)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
    from .commands_tasks import register as register_tasks  # here: commands_tasks imports this module

    register_tasks(app)
    app.add_typer(doctor_app, name="doctor")
    for fn, name in ((nodes, "nodes"), (status, "status"), (cmd, "cmd"), (ping, "ping"), (alerts, "alerts"),
                     (top, "top"), (demo, "demo")):
        app.command(name)(fn)
