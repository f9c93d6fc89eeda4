"""The web console (issue 13 part 4) in a real headless browser: Debian's chromium driven by Playwright,
against a real gateway over a real nats-server with real `nxs node run` worker processes.

Every wait is on a page condition (Playwright's ``expect``, which polls the DOM) or on the mesh
(``eventually``); nothing sleeps. Set ``NXS_CONSOLE_SCREENSHOT=docs/console.png`` to keep the screenshot
the scenario takes at its end (that is how the README's picture is made).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import assert_json_error, running_gateway
from node_support import Worker, run_cli, wait_state
from test_gateway_cli import NXS, ROOT, _env, _free_port, _start

from nxs_mesh import Mesh, Reject
from nxs_mesh.config import MeshConfig
from nxs_mesh.gateway import CONSOLE_DIR, TokenTable
from nxs_mesh.testing import eventually, unique_id
from nxs_mesh.transport.server import NatsServer

playwright_api = pytest.importorskip("playwright.async_api", reason="the test extra's playwright is not installed")

pytestmark = pytest.mark.timeout(120)

#: Playwright's own browser download cannot work here; Debian's package can (`.ci/run` installs it).
CHROMIUM = os.environ.get("NXS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason=f"no Chromium at {CHROMIUM}: apt-get install chromium (or set NXS_CHROMIUM)")
WAIT_MS = 20_000  # a page condition's deadline: nodes die after 1 s, a loaded machine needs margin


@contextlib.asynccontextmanager
async def console_page(url: str) -> AsyncIterator[tuple[Any, list[str]]]:
    """A headless Chromium page opened at ``url``, and the script errors it raised (none, at the end)."""
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(url)
            await playwright_api.expect(page).to_have_title("nxs-mesh console")
            yield page, errors
            assert errors == [], errors
        finally:
            await browser.close()


@needs_chromium
async def test_console_shows_live_nodes_a_killed_node_dead_with_its_alert_chat_and_a_task(
    mesh: Mesh, nats_server: NatsServer, workers: Callable[..., Worker], tmp_path: Path,
) -> None:
    ids = [unique_id("web") for _ in range(3)]
    procs = [workers(node, "-C", "echo") for node in ids]  # -C: the capabilities they take tasks for
    for node in ids:
        await wait_state(mesh, node, "running")
    expect = playwright_api.expect
    async with running_gateway(mesh, console=CONSOLE_DIR) as gate, console_page(gate.server.url + "/") as (page, _):
        # three live nodes, each with its heartbeat age, load and server
        for node in ids:
            row = page.locator(f'#nodes tr[data-node="{node}"]')
            await expect(row.locator(".state")).to_have_text("running", timeout=WAIT_MS)
            await expect(row.locator(".age")).to_have_text(re.compile(r"^\d+\.\d s$"))
            await expect(row.locator(".server")).to_contain_text("nats://127.0.0.1")
        await expect(page.locator("#link")).to_have_text("live", timeout=WAIT_MS)  # the SSE streams are open

        # kill -9 one: the page shows it dead, and the Doctor's alert arrives on the page by itself
        victim = ids[1]
        procs[1].signal(signal.SIGKILL)
        await expect(page.locator(f'#nodes tr[data-node="{victim}"] .state')).to_have_text("dead", timeout=WAIT_MS)
        alert = page.locator(f'#alerts li[data-event="dead"][data-node="{victim}"]')
        await expect(alert).to_have_count(1, timeout=WAIT_MS)
        await expect(alert).to_contain_text(f"{victim} is dead")
        for node in (ids[0], ids[2]):  # the others stay up
            await expect(page.locator(f'#nodes tr[data-node="{node}"] .state')).to_have_text("running")

        # a message typed in the chat view is stored, shows in the chat list, and in the mesh
        text = f"hello from the browser {unique_id('c')}"
        await page.fill("#chat-to", ids[0])
        await page.fill("#chat-text", text)
        await page.click("#chat-form button[type=submit]")
        await expect(page.locator("#chat-status")).to_contain_text("stored in NXS_CHAT as #", timeout=WAIT_MS)
        await expect(page.locator("#chat li .text", has_text=text)).to_have_count(1, timeout=WAIT_MS)
        await expect(page.locator("#chat-text")).to_have_value("")

        # a task submitted from the page is followed to its final state, with the node that did it
        await page.fill("#task-capability", "echo")
        await page.fill("#task-payload", '{"n": 7}')
        await page.click("#task-form button[type=submit]")
        task = page.locator("#tasks tbody tr").first
        await expect(task.locator(".state")).to_have_text("completed", timeout=WAIT_MS)
        await expect(task.locator(".result")).to_have_text('{"n":7}')
        assert await task.locator(".node").text_content() in (ids[0], ids[2])  # a live node did it

        shot = tmp_path / "console.png"
        await page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if target := os.environ.get("NXS_CONSOLE_SCREENSHOT"):
        shutil.copyfile(shot, target)

    async def stored() -> list[str]:
        return [r.envelope.source.instance_id async for r in mesh.tail("chat", instance=ids[0])
                if r.envelope is not None and r.envelope.payload.content == text]

    assert await eventually(stored, timeout=10, what="the browser's chat message in NXS_CHAT") == [mesh.config.instance_id]
    code, out, err = await run_cli(nats_server.url, "tail", "chat", "--node", ids[0], "--json")
    assert code == 0 and text in out, (code, out, err)


@needs_chromium
async def test_console_cancels_a_running_task_with_its_cancel_button(
    mesh: Mesh, workers: Callable[..., Worker],
) -> None:
    """A task the page submitted runs on a worker (the built-in ``sleep``, 60 s); its Cancel button asks the
    gateway (``POST /v1/tasks/{id}/cancel``): the row turns ``cancelled``, the button goes, the mesh agrees,
    the worker's handler is cancelled, and a second cancel is the gateway's 409."""
    worker = workers(unique_id("sleeper"), "-C", "sleep")
    await wait_state(mesh, worker.node_id, "running")
    expect = playwright_api.expect
    async with running_gateway(mesh, console=CONSOLE_DIR) as gate, console_page(gate.server.url + "/") as (page, _):
        await page.fill("#task-capability", "sleep")
        await page.fill("#task-payload", "60")
        await page.click("#task-form button[type=submit]")
        row = page.locator("#tasks tbody tr").first
        await expect(row.locator(".state")).to_have_text("claimed", timeout=WAIT_MS)
        await expect(row.locator(".node")).to_have_text(worker.node_id)
        task_id = await row.get_attribute("data-task")
        assert task_id is not None
        await row.locator("button.cancel").click()
        await expect(row.locator(".state")).to_have_text("cancelled", timeout=WAIT_MS)
        await expect(row.locator("button.cancel")).to_be_hidden()
        await expect(page.locator("#task-status")).to_have_text(f"task {task_id} cancelled")
        assert (await gate.client.get(f"/v1/tasks/{task_id}")).json()["state"] == "cancelled"
        assert (await gate.client.post(f"/v1/tasks/{task_id}/cancel")).status_code == 409  # once only
    await eventually(lambda: "cancelled while running" in worker.log(), timeout=10, what="the handler cancelled")


@needs_chromium
async def test_console_with_tokens_reads_the_token_from_the_address_and_acts_as_its_identity(
    mesh: Mesh, mesh_config: MeshConfig, tmp_path: Path,
) -> None:
    """Opened as /#token=T the page sends T as a bearer header, and to /v1/stream as ?access_token=
    (EventSource sends no headers), so its streams are live and its chat is sent as T's identity;
    the token leaves the address bar. Without a token it says the stream was refused."""
    token, identity = "console-token-0123456789", unique_id("person")
    (tmp_path / "tokens.toml").write_text(f'[[token]]\ntoken = "{token}"\nidentity = "{identity}"\n')
    table = TokenTable.load(tmp_path / "tokens.toml", mesh_config)
    expect = playwright_api.expect
    async with running_gateway(mesh_config.replace(instance_id="gw"), tokens=table, console=CONSOLE_DIR) as gate:
        async with console_page(gate.server.url + "/") as (page, _):
            await expect(page.locator("#link")).to_have_text(re.compile("^stream refused"), timeout=WAIT_MS)
            await expect(page.locator("#nodes-error")).to_contain_text("401", timeout=WAIT_MS)
        async with console_page(f"{gate.server.url}/#token={token}") as (page, _):
            await expect(page.locator("#link")).to_have_text("live", timeout=WAIT_MS)
            assert "token" not in page.url, page.url
            await page.fill("#chat-to", "n2")
            await page.fill("#chat-text", "sent with a token")
            await page.click("#chat-form button[type=submit]")
            await expect(page.locator("#chat li .who", has_text=f"{identity}/main → n2")).to_have_count(1, timeout=WAIT_MS)

    async def sender() -> list[str]:
        return [r.envelope.source.instance_id async for r in mesh.tail("chat", instance="n2")
                if r.envelope is not None and r.envelope.payload.content == "sent with a token"]

    assert await eventually(sender, timeout=10, what="the chat sent with a token") == [identity]


@needs_chromium
async def test_console_lists_a_dead_letter_with_its_reason_and_its_replay_button_puts_it_back(mesh: Mesh) -> None:
    calls: list[str] = []

    async def handler(env: Any) -> None:
        calls.append(env.content)
        if len(calls) == 1:
            raise Reject("missing context")

    consumer = await mesh.consume("chat", handler)
    await mesh.publish("CHAT", "needs a second try", to=mesh.config.instance_id)
    await eventually(lambda: consumer.stats.dead_lettered == 1, what="the chat dead-lettered")
    expect = playwright_api.expect
    async with running_gateway(mesh, console=CONSOLE_DIR) as gate:
        [dead] = (await gate.client.get("/v1/dlq")).json()["dead_letters"]
        async with console_page(gate.server.url + "/") as (page, _):
            row = page.locator(f'#dlq tr[data-id="{dead["id"]}"]')
            await expect(row.locator(".reason")).to_have_text("rejected by handler: missing context", timeout=WAIT_MS)
            await expect(row.locator(".subject")).to_have_text(f"nxs.chat.{mesh.config.instance_id}._all")
            await row.locator("button.replay").click()
            await expect(page.locator("#dlq-status")).to_contain_text(f"#{dead['id']} replayed to nxs.chat.", timeout=WAIT_MS)
            await expect(page.locator("#dlq tbody tr")).to_have_count(0, timeout=WAIT_MS)
        await eventually(lambda: consumer.stats.acked == 1, what="the replayed chat handled")
        assert calls == ["needs a second try", "needs a second try"]
        assert (await gate.client.get("/v1/dlq")).json() == {"dead_letters": [], "count": 0}
        assert_json_error(await gate.client.post(f"/v1/dlq/{dead['id']}/replay"), 404, "dlq_id")  # gone
        assert_json_error(await gate.client.post("/v1/dlq/x1/replay"), 400, "dlq_id")


def test_nxs_gateway_serves_the_shipped_console_by_default(nats_server: NatsServer, tmp_path: Path) -> None:
    """`nxs gateway` serves the package's console at /; `--console DIR` serves DIR instead; `--no-console`
    serves the API only (/ is a JSON 404, the API still answers)."""
    env = _env(tmp_path, nats_server.url)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("<title>my console</title>")
    for extra, title in (((), "nxs-mesh console"), (("--console", str(mine)), "my console"), (("--no-console",), None)):
        proc, url = _start([NXS, "gateway", "--listen", "127.0.0.1:0", *extra], env, tmp_path)
        try:
            with httpx.Client(base_url=url, timeout=10) as client:
                page = client.get("/")
                assert client.get("/v1/health").status_code == 200
                if title is None:
                    assert page.status_code == 404 and "error" in page.json(), page.text
                    continue
                assert page.status_code == 200 and f"<title>{title}</title>" in page.text, (extra, page.text[:200])
                if not extra:
                    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
                        got = client.get(f"/{name}")
                        assert got.status_code == 200 and kind in got.headers["content-type"], (name, got.headers)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)


def test_the_readme_console_example_runs_as_written(nats_server: NatsServer, tmp_path: Path) -> None:
    section = (ROOT / "README.md").read_text().split("### Web console", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"^```bash\n(.*?)^```", section, re.S | re.M)
    assert found, "the README's web console section has a bash block"
    script = found.group(1).replace("8080", str(_free_port()))  # 8080 may be taken on a shared machine
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                       env=_env(tmp_path, nats_server.url), timeout=60)
    assert r.stdout.splitlines()[-1] == "<title>nxs-mesh console</title>", r.stdout + r.stderr  # after the listening line
    assert "Traceback" not in r.stderr, r.stderr
