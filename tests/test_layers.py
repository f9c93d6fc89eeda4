"""The layout is a contract too: layers import only downwards, only transport touches nats-py, and
modules and functions stay small. Read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from nxs_mesh import Mesh
from nxs_mesh.transport.link import server_info_of

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "nxs_mesh"
CLI = ROOT / "cli"

# Lower rank = lower layer. A module may import its own package and lower ranks only.
RANK = {"wire": 0, "version": 0, "config": 1, "aio": 1, "transport": 2, "client": 3, "node": 4, "deploy": 4,
        "gateway": 5, "testing": 9, "worker": 9, "__init__": 9}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules(base: Path) -> list[Path]:
    return sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts)


def layer(path: Path) -> str:
    rel = path.relative_to(LIB).parts
    return rel[0].removesuffix(".py")


def imports(path: Path) -> list[str]:
    """Absolute module names imported by ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    pkg = ".".join(("nxs_mesh", *path.relative_to(LIB).parts[:-1])) if path.is_relative_to(LIB) else ""
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.rsplit(".", node.level - 1)[0] if node.level > 1 else pkg
                out.append(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                out.append(node.module)
                out += [f"{node.module}.{a.name}" for a in node.names if node.module == "nxs_mesh"]
    return out


def module_name(path: Path) -> str:
    parts = path.relative_to(LIB).with_suffix("").parts
    return ".".join(("nxs_mesh", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def test_layers_import_only_downwards():
    upward = []
    for path in modules(LIB):
        here = layer(path)
        for name in imports(path):
            if not name.startswith("nxs_mesh."):
                continue
            there = name.split(".")[1]
            if there in RANK and there != here and RANK[there] >= RANK[here]:
                upward.append(f"{path.relative_to(ROOT)} imports {name} ({here} -> {there})")
    assert upward == []


def test_the_import_graph_has_no_cycle():
    names = {module_name(p): p for p in modules(LIB)}
    graph = {m: sorted({i for i in imports(p) if i in names and i != m}) for m, p in names.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, path: list[str]) -> bool:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                cycle.extend([*path, m, n])
                return True
            if n not in state and visit(n, [*path, m]):
                return True
        state[m] = 2
        return False

    for m in graph:
        if m not in state and visit(m, []):
            break
    assert cycle == []


def test_only_transport_imports_nats_py_and_the_library_never_imports_typer_or_rich():
    nats_users, ui = [], []
    for path in modules(LIB):
        roots = {i.split(".")[0] for i in imports(path)}
        if "nats" in roots and layer(path) != "transport":
            nats_users.append(str(path.relative_to(ROOT)))
        if roots & {"typer", "rich"}:
            ui.append(str(path.relative_to(ROOT)))
    assert nats_users == [] and ui == []


def test_the_cli_touches_nats_py_only_in_the_benchmark():
    """The CLI catches MeshError subclasses only: it has no nats-py names to catch. The benchmark's
    anchors are raw nats-py clients on purpose."""
    users = [str(p.relative_to(ROOT)) for p in modules(CLI)
             if "bench" not in p.parts and any(i.split(".")[0] == "nats" for i in imports(p))]
    assert users == []


def test_the_benchmark_is_not_part_of_the_library():
    assert not (LIB / "bench").exists()
    assert (CLI / "bench" / "runner.py").is_file()


@pytest.mark.parametrize("path", modules(LIB) + modules(CLI), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path: Path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{lines} lines"
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.end_lineno is not None
            and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


async def test_the_one_private_nats_py_attribute_we_read_still_exists(mesh: Mesh):
    """``server_info_of`` reads nats-py's private ``_server_info`` (no public accessor exists): if
    nats-py renames it, this fails instead of the mesh silently seeing an empty INFO."""
    nc = mesh.link.nc
    assert isinstance(getattr(nc, "_server_info", None), dict)
    info = server_info_of(nc)
    assert info.version not in ("", "?") and info.max_payload == nc.max_payload and info.jetstream


def test_layers_above_the_client_use_the_mesh_not_its_connection():
    """node/, deploy/, gateway/ and the CLI go through ``Mesh`` methods: never its transport objects."""
    reach = []
    for path in [*modules(LIB / "node"), *modules(LIB / "deploy"), *modules(LIB / "gateway"), *(p for p in modules(CLI) if "bench" not in p.parts)]:
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Attribute) and n.attr in ("link", "nc", "js", "pub", "_link"):
                reach.append(f"{path.relative_to(ROOT)}:{n.lineno} .{n.attr}")
    assert reach == []
