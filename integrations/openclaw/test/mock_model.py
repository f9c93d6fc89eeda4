"""A small OpenAI-compatible model server for the real-gateway test (no network, no weights).

    python mock_model.py [PORT]     prints {"port": N} once listening on 127.0.0.1:N; runs until killed

POST /v1/chat/completions (streamed as SSE when asked, else one JSON) answers the last user message:

- "mock turn <n>: <text>" where n counts the user messages the gateway sent: the conversation's length,
  so two peers with their own sessions each see turn 1;
- a message containing "HOLD" is not answered while a file named ``hold`` exists in the working
  directory (the test kills the gateway meanwhile: a prompt in flight);
- a message containing "DELEGATE <instance> <json args>" gets a tool call to nxs_delegate (command
  "echo"); once the tool's result comes back, the answer is "tool said: <result>".

Every request is appended to requests.jsonl in the working directory (what the test inspects).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "mock-1"


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


INTERNAL = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>"
# OpenClaw 2026.9 wraps an inbound message as: "[time] Conversation info: ...```json {...}```\n\n<body>\n\nRuntime: ..."
_BODY = re.compile(r"```\s*\n\n(.*?)(?:\n\nRuntime:|\Z)", re.S)


def inbound_bodies(messages: list[dict[str, Any]]) -> list[str]:
    """The channel messages of this conversation, oldest first (OpenClaw's own context messages left out)."""
    out = []
    for m in messages:
        said = text_of(m.get("content")) if m.get("role") == "user" else ""
        if said and INTERNAL not in said:
            found = _BODY.search(said)
            out.append((found.group(1) if found else said).strip())
    return out


def _last_inbound(messages: list[dict[str, Any]]) -> int:
    found = [i for i, m in enumerate(messages) if m.get("role") == "user" and INTERNAL not in text_of(m.get("content"))]
    return found[-1] if found else -1


def tool_call(name: str, args: dict[str, Any], tools: list[str]) -> dict[str, Any]:
    """A call of ``name``: directly when offered, else through OpenClaw's Tool Search ``tool_call``."""
    fn = {"name": name, "arguments": json.dumps(args)} if name in tools else \
        {"name": "tool_call", "arguments": json.dumps({"id": name, "args": args})}
    return {"content": None, "tool_calls": [{"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function", "function": fn}]}


def answer(req: dict[str, Any]) -> dict[str, Any]:
    """The assistant message for one request: text, or a tool call."""
    messages = req.get("messages", [])
    since = [m for m in messages[_last_inbound(messages) + 1:] if m.get("role") == "tool"]
    if since:  # the tool answered (or failed): say what it said, once
        return {"content": f"tool said: {text_of(since[-1].get('content'))}"}
    bodies = inbound_bodies(messages)
    said = bodies[-1] if bodies else ""
    while "HOLD" in said and os.path.exists("hold"):
        time.sleep(0.05)  # sleep-ok: the mock model "thinks" until the test removes the hold file
    ask = re.search(r"DELEGATE (\S+) (\{.*\})", said)
    if ask:
        tools = [t.get("function", {}).get("name") for t in req.get("tools", [])]
        args = {"instance": ask.group(1), "command": "echo", "args": json.loads(ask.group(2)), "timeoutSeconds": 20}
        return tool_call("nxs_delegate", args, tools)
    return {"content": f"mock turn {len(bodies)}: {said}"}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # quiet: the test reads requests.jsonl
        pass

    def _json(self, code: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "mock"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        with open("requests.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"path": self.path, "body": req}) + "\n")
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        msg = answer(req)
        finish = "tool_calls" if msg.get("tool_calls") else "stop"
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        if not req.get("stream"):
            self._json(200, {"id": cid, "object": "chat.completion", "created": created, "model": MODEL, "usage": usage,
                             "choices": [{"index": 0, "message": {"role": "assistant", **msg}, "finish_reason": finish}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        delta: dict[str, Any] = {"role": "assistant"}
        if msg.get("content") is not None:
            delta["content"] = msg["content"]
        if msg.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(msg["tool_calls"])]
        chunks = [{"choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "usage": usage}]
        for chunk in chunks:
            doc = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": MODEL, **chunk}
            self.wfile.write(f"data: {json.dumps(doc)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(json.dumps({"port": server.server_address[1]}), flush=True)  # noqa: T201 - the test reads this line
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
