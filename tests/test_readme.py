"""Every example in the README runs as written.

The README's python blocks are the files in examples/, byte for byte (each block's first line names its
file); they run here against a real nats-server. Its shell commands run too, in README order, through
the installed `nxs` console script from the repository root (as a user in a clone would), against a
real server; the few that cannot run in a test are listed in SKIPPED with the reason, and a command
that is neither run nor listed fails the test, so the README and this test cannot drift apart.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import nxs_mesh
from nxs_mesh import Mesh
from nxs_mesh.node.handlers import Registry
from nxs_mesh.testing import eventually
from nxs_mesh.transport.server import NatsServer

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
NXS = str(Path(sys.executable).parent / "nxs")  # the console script: its sys.path does not hold the cwd
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

SKIPPED = {
    "git clone <this repo> nxs-mesh && cd nxs-mesh": "the reader's own checkout",
    "make run": "the nats_server fixture plus `nxs init` stand in for it (`nxs up` on a free port)",
    "make test": "this suite",
    "nxs tail chat --since 10m --follow": "follows until Ctrl-C (tests/test_cli_core.py follows in a subprocess)",
    "nxs alerts --follow": "follows until Ctrl-C",
    "nxs top": "a live view until Ctrl-C (tests/test_cli_node.py runs it with --iterations 1)",
    "make demo": "test_make_demo_runs_as_written below (slow)",
    'nxs prompt helper "hello"': "needs examples/sap_node.py serving: tests/test_sap_readme.py runs both",
}


def blocks(lang: str) -> list[str]:
    return [body for info, body in _BLOCK.findall(README) if info == lang]


def shell_commands() -> list[str]:
    """Each command line of the README's sh blocks, without its comment."""
    out = []
    for body in blocks("sh"):
        for line in body.splitlines():
            command = line.split("  #")[0].strip()
            if command and not command.startswith("#"):
                out.append(command)
    return out


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NXS_")}
    (tmp_path / "home").mkdir(exist_ok=True)
    return {**env, "HOME": str(tmp_path / "home"), "NXS_URL": url, "NXS_DATA_DIR": str(tmp_path / "data"),
            "COLUMNS": "120", "PYTHONUNBUFFERED": "1"}


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_python_blocks_are_the_example_files() -> None:
    named = {}
    for body in blocks("python"):
        first = body.splitlines()[0]
        found = re.match(r"# (examples/[\w/]+\.py)\b", first)
        assert found, f"a README python block must start with '# examples/<file>.py': {first!r}"
        named[found.group(1)] = body
    files = {str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*.py") if p.name != "__init__.py"}
    assert set(named) == files  # every block is a file and every example file is in the README
    for name, body in named.items():
        assert (ROOT / name).read_text() == body, f"README block differs from {name}"


def test_registry_is_exported() -> None:
    assert nxs_mesh.Registry is Registry and "Registry" in nxs_mesh.__all__


def test_library_example_runs(nats_server: NatsServer, tmp_path: Path) -> None:
    r = _run([sys.executable, str(ROOT / "examples" / "library.py")], _env(tmp_path, nats_server.url), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "{'ok': True}" in r.stdout and "hello" in r.stdout, r.stdout


async def test_testing_example_runs(mesh: Mesh) -> None:
    spec = importlib.util.spec_from_file_location("readme_testing_example", ROOT / "examples" / "test_agent.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    await module.test_my_agent(mesh)


@pytest.mark.timeout(90)
def test_node_example_runs(nats_server: NatsServer, tmp_path: Path) -> None:
    env = _env(tmp_path, nats_server.url)
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "node.py")], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _until_running(env, tmp_path, "nxs-node-001")
        r = _run([NXS, "cmd", "nxs-node-001", "greet", "world"], env, tmp_path)
        assert r.returncode == 0 and r.stdout.strip() == "hello world", r.stdout + r.stderr
        r = _run([NXS, "task", "submit", "resize", '{"w": 64}', "--wait"], env, tmp_path)
        assert r.returncode == 0 and "done by nxs-node-001" in r.stdout, r.stdout + r.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
    assert "Traceback" not in out, out


def _until_running(env: dict[str, str], cwd: Path, node: str, worker: subprocess.Popen[str] | None = None) -> None:
    def running() -> bool:
        if worker is not None and worker.poll() is not None:
            out = worker.stdout.read() if worker.stdout else ""
            raise AssertionError(f"the worker exited {worker.returncode}: {out}")
        r = _run([NXS, "status", node, "--json"], env, cwd)
        return r.returncode == 0 and '"state":"running"' in r.stdout

    asyncio.run(eventually(running, timeout=30, interval=0.2, what=f"{node} running"))


@pytest.mark.timeout(150)
def test_shell_commands_run_as_written(nats_server: NatsServer, tmp_path: Path) -> None:
    commands = shell_commands()
    assert {c for c in commands if c in SKIPPED} == set(SKIPPED)  # no stale entries
    env = _env(tmp_path, nats_server.url)
    assert _run([NXS, "init"], env, ROOT).returncode == 0  # what `make run` does once its server is up
    worker = None
    ran = []
    try:
        for command in commands:
            if command in SKIPPED:
                continue
            argv = shlex.split(command)
            assert argv[0] == "nxs", f"README command neither run nor in SKIPPED: {command!r}"
            if argv[1:3] == ["node", "run"]:
                # The worker as written, from the repository root: --handlers examples.resize:registry
                # must import from the current directory.
                worker = subprocess.Popen([NXS, *argv[1:]], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)
                node = argv[argv.index("--id") + 1]
                _until_running(env, ROOT, node, worker)
                ran.append(command)
                continue
            r = _run([NXS, *argv[1:]], env, ROOT)
            assert r.returncode == 0, f"{command}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
            assert "Traceback" not in r.stderr, r.stderr
            if argv[1:3] == ["task", "submit"]:
                assert "done by nxs-node-001" in r.stdout, r.stdout
            ran.append(command)
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                assert worker.wait(30) == 0
            finally:
                if worker.poll() is None:
                    worker.kill()
    assert any("node run" in c for c in ran) and any("task submit" in c for c in ran), ran


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_make_demo_runs_as_written(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on this machine")
    if subprocess.run([make, "-q", ".venv/.installed"], cwd=ROOT).returncode != 0:
        pytest.skip("the .venv make would use is not installed or out of date (make would reinstall it)")
    env = {k: v for k, v in _env(tmp_path, "").items() if k != "NXS_URL"}  # the demo starts its own server
    r = _run([make, "-s", "demo"], env, ROOT, timeout=110)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kill -9" in r.stdout and "exit codes [0, 0]" in r.stdout, r.stdout


def test_handlers_import_from_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--handlers mymod:registry` finds ./mymod.py even from the `nxs` console script, whose sys.path
    holds the script's directory, not the current one."""
    from nxs_mesh.node.handlers import load_handlers

    name = f"readme_handlers_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(
        "from nxs_mesh import Registry\nregistry = Registry()\n\n"
        "@registry.task('resize')\nasync def resize(payload):\n    return payload\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    monkeypatch.delitem(sys.modules, name, raising=False)
    registry = load_handlers(Registry(), [f"{name}:registry"], plugins=False)
    assert list(registry.tasks) == ["resize"]
    sys.modules.pop(name, None)
