"""The OpenAPI 3.1 document served at ``/openapi.json``, kept by hand.

Why by hand: Starlette's ``SchemaGenerator`` reads YAML out of docstrings (one more dependency, and
the docstrings would become schema text), and its output holds only what those strings say. A dict
here says exactly what each operation takes and answers, and ``tests/test_gateway_api.py`` checks it
against the app's routes both ways, so a route without a document (or the reverse) fails the suite.

The A2A binding (``/a2a/<agent>``, the ``a2a`` extra) is documented when it is mounted, i.e. when the
a2a-sdk is installed (``a2a_installed``, the same test ``gateway.app`` makes): its agent card and its
JSON-RPC endpoint, with the methods the SDK serves; the messages themselves are the A2A protocol's
(linked, not copied: the SDK owns them).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from nxs_mesh.version import VERSION

__all__ = ["A2A_METHODS", "a2a_installed", "openapi_document"]

_JSON = "application/json"
#: The JSON-RPC methods ``POST /a2a/<agent>`` answers (the a2a-sdk's JSON-RPC handler; ``gateway.a2a``).
A2A_METHODS = ("SendMessage", "SendStreamingMessage", "GetTask", "ListTasks", "CancelTask", "SubscribeToTask")
_A2A_SPEC = "https://a2a-protocol.org/latest/specification/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: int) -> dict[str, Any]:
    why = {400: "bad input (the field is named)", 401: "missing or unknown bearer token",
           403: "the identity's permissions refuse it", 404: "not found",
           409: "it cannot be done to this one (the task already ended, the dead letter cannot go back)",
           413: "body over the limit",
           502: "the remote side answered with an error", 503: "the mesh is not reachable",
           504: "no answer in time"}
    return {str(c): {"description": why[c], "content": {_JSON: {"schema": _ref("Error")}}} for c in codes}


def _ok(code: int, description: str, schema: dict[str, Any] | None = None, media: str = _JSON) -> dict[str, Any]:
    content = {"content": {media: {"schema": schema or {"type": "object"}}}}
    return {str(code): {"description": description, **content}}


def _q(name: str, description: str, kind: str = "string", where: str = "query", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "description": description,
            "schema": {"type": kind}}


_REPLAY = [_q("kind", "stream: chat, command, task, result, status, heartbeat, sync, alert, dlq (default chat)"),
           _q("instance", "only messages to (or, for status/heartbeat/alert, from) this node"),
           _q("agent", "only messages to this agent"),
           _q("since", "a stream sequence (123), a duration (30s, 10m, 2h, 1d) or an RFC 3339 time"),
           _q("last", "only the last N stored messages", "integer")]
_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_STD = (400, 401, 403, 503)


def _paths() -> dict[str, Any]:
    publish_body = {"required": True, "content": {_JSON: {"schema": {"oneOf": [_ref("ShortMessage"), _ref("Envelope")]}}}}
    key = _q("Idempotency-Key", "becomes the envelope's message_id: a repeat answers the first one's sequence",
             where="header")
    return {
        "/v1/messages": {
            "post": {"summary": "Publish an envelope (full contract form or the short form)", "parameters": [key],
                     "requestBody": publish_body, "security": _AUTH,
                     "responses": {**_ok(201, "stored", _ref("Ack")), **_ok(200, "a duplicate: already stored", _ref("Ack")),
                                   **_errors(*_STD, 413, 504)}},
            "get": {"summary": "Replay stored messages in stream order", "security": _AUTH,
                    "parameters": [*_REPLAY, _q("limit", "at most this many (1..1000, default 100)", "integer")],
                    "responses": {**_ok(200, "messages, and `next`: the `since` that goes on after them",
                                        _ref("Messages")), **_errors(*_STD)}},
        },
        "/v1/stream": {"get": {
            "summary": "Server-Sent Events: stored then new messages; event id = stream sequence", "security": _AUTH,
            "parameters": [*_REPLAY, _q("Last-Event-ID", "resume after this stream sequence", where="header"),
                           _q("access_token", "the bearer token, for EventSource (it cannot send headers); here only")],
            "responses": {**_ok(200, "an event stream; each data is a Record", {"type": "string"}, "text/event-stream"),
                          **_errors(*_STD)}}},
        "/v1/nodes": {"get": {"summary": "Nodes with their state, heartbeat age, load, server", "security": _AUTH,
                              "responses": {**_ok(200, "nodes"), **_errors(401, 403, 503)}}},
        "/v1/nodes/{node}/commands/{command}": {"post": {
            "summary": "Send a COMMAND and wait for its RESULT", "security": _AUTH,
            "parameters": [_q("node", "node id, or * for any node", where="path"),
                           _q("command", "command name", where="path"),
                           _q("timeout", "seconds to wait (default 10)", "number"),
                           _q("priority", "0..9 (default 5)", "integer"), _q("agent", "target agent (default *)")],
            "requestBody": {"required": False, "content": {_JSON: {"schema": {}}}},
            "responses": {**_ok(200, "the result", _ref("Reply")), **_errors(*_STD, 404, 413, 502, 504)}}},
        "/v1/tasks": {"post": {
            "summary": "Queue a TASK for any worker with the capability (optionally wait for it)", "security": _AUTH,
            "parameters": [_q("Idempotency-Key", "becomes the task id: a repeat is stored once", where="header")],
            "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("TaskRequest")}}},
            "responses": {**_ok(202, "queued"), **_ok(200, "done (with wait)"), **_errors(*_STD, 413, 502, 504)}}},
        "/v1/tasks/{task_id}": {"get": {
            "summary": "A task's state (submitted, claimed, completed, failed, expired, cancelled, orphaned) and "
                       "result", "security": _AUTH,
            "parameters": [_q("task_id", "the task id (a UUID)", where="path")],
            "responses": {**_ok(200, "the task"), **_errors(*_STD)}}},
        "/v1/tasks/{task_id}/cancel": {"post": {
            "summary": "Cancel a task: unclaimed it never runs, running its handler is cancelled", "security": _AUTH,
            "parameters": [_q("task_id", "the task id (a UUID)", where="path")],
            "responses": {**_ok(200, "the cancelled task"), **_errors(*_STD, 409)}}},
        "/v1/files": {"get": {"summary": "Files in the Object Store", "security": _AUTH,
                              "responses": {**_ok(200, "files"), **_errors(*_STD)}}},
        "/v1/files/{name}": _file_ops(),
        "/v1/alerts": {"get": {"summary": "The Doctor's stored alerts", "security": _AUTH,
                               "parameters": [_q("node", "only alerts about this node"), _REPLAY[3], _REPLAY[4],
                                              _q("limit", "at most this many (default 100)", "integer")],
                               "responses": {**_ok(200, "alerts"), **_errors(*_STD)}}},
        **_dlq_ops(),
        "/v1/health": {"get": {"summary": "The gateway's connections (no token needed); deep=1 adds the mesh check",
                               "parameters": [_q("deep", "1: also run the mesh check (needs a token)")],
                               "responses": {**_ok(200, "up"), **_errors(401, 503)}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": _ok(200, "OpenAPI 3.1")}},
    }


def _dlq_ops() -> dict[str, Any]:
    return {
        "/v1/dlq": {"get": {"summary": "Dead letters with their reason (as `nxs dlq list`)", "security": _AUTH,
                            "parameters": [_q("last", "the last N (1..1000, default 100)", "integer")],
                            "responses": {**_ok(200, "dead letters"), **_errors(*_STD)}}},
        "/v1/dlq/{dlq_id}/replay": {"post": {
            "summary": "Publish a dead letter back to its original subject and remove it", "security": _AUTH,
            "parameters": [_q("dlq_id", "the dead letter's id (its NXS_DLQ sequence)", where="path")],
            "responses": {**_ok(200, "where it went: id, subject, stream, seq"), **_errors(*_STD, 404, 409)}}},
    }


def _file_ops() -> dict[str, Any]:
    name = _q("name", "file name (may contain /)", where="path")
    binary = {"type": "string", "format": "binary"}
    return {
        "put": {"summary": "Store a file, streamed (replaces one of that name once complete)", "security": _AUTH,
                "parameters": [name, _q("to", "the node it is for (gets a SYNC notice)"), _q("description", "text")],
                "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": binary}}},
                "responses": {**_ok(201, "stored", _ref("FileInfo")), **_errors(*_STD, 413)}},
        "get": {"summary": "Read a file, streamed; ETag = its SHA-256", "security": _AUTH, "parameters": [name],
                "responses": {**_ok(200, "the bytes", binary, "application/octet-stream"), **_errors(*_STD, 404)}},
        "delete": {"summary": "Delete a file", "security": _AUTH, "parameters": [name],
                   "responses": {**_ok(200, "deleted", _ref("FileInfo")), **_errors(*_STD, 404)}},
    }


def _schemas() -> dict[str, Any]:
    obj, text, integer = {"type": "object"}, {"type": "string"}, {"type": "integer"}
    return {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": text, "field": {"type": ["string", "null"]}}},
        "ShortMessage": {"type": "object", "required": ["type"], "additionalProperties": False, "properties": {
            "type": {"enum": ["CHAT", "COMMAND", "STATUS", "HEARTBEAT", "SYNC", "TASK", "RESULT", "ALERT"]},
            "to": text, "agent": text, "to_agent": text, "content": {}, "metadata": obj,
            "priority": {"type": "integer", "minimum": 0, "maximum": 9}, "ttl": {"type": "integer", "minimum": 0},
            "correlation_id": text}},
        "Envelope": {"type": "object", "description": "the wire envelope (DESIGN.md section 3)",
                     "required": ["message_id", "timestamp", "source", "target", "message_type", "payload"]},
        "Ack": {"type": "object", "properties": {"message_id": text, "stream": text, "seq": integer,
                                                 "duplicate": {"type": "boolean"}}},
        "Record": {"type": "object", "properties": {"seq": integer, "subject": text, "stored_at": text,
                                                    "envelope": {"oneOf": [_ref("Envelope"), {"type": "null"}]},
                                                    "error": {"type": ["string", "null"]}}},
        "Messages": {"type": "object", "properties": {"messages": {"type": "array", "items": _ref("Record")},
                                                      "count": integer, "more": {"type": "boolean"},
                                                      "next": {"type": ["integer", "null"]}}},
        "Reply": {"type": "object", "properties": {"node": text, "result": {}, "metadata": obj}},
        "TaskRequest": {"type": "object", "required": ["capability"], "additionalProperties": False, "properties": {
            "capability": text, "payload": {}, "priority": integer, "ttl": integer, "wait": {"type": "boolean"},
            "timeout": {"type": "number"}}},
        "FileInfo": {"type": "object", "properties": {"name": text, "size": integer, "digest": text, "chunks": integer}},
    }


def a2a_installed() -> bool:
    """Whether the ``a2a`` extra (a2a-sdk) is installed, so the gateway mounts ``/a2a``."""
    return importlib.util.find_spec("a2a") is not None


def _a2a_paths() -> dict[str, Any]:
    agent = _q("agent", "the mesh agent id (as `nxs agents` lists it, e.g. agent:research)", where="path")
    rpc = {"type": "object", "required": ["jsonrpc", "method"], "properties": {
        "jsonrpc": {"const": "2.0"}, "id": {"type": ["string", "integer"]}, "method": {"enum": list(A2A_METHODS)},
        "params": {"type": "object"}}}
    see = {"description": "the A2A protocol", "url": _A2A_SPEC}
    return {
        "/a2a/{agent}/.well-known/agent-card.json": {"get": {
            "summary": "The agent's A2A AgentCard: one skill per command (command:<name>) and task capability "
                       "(task:<capability>) of its owner", "tags": ["a2a"], "externalDocs": see,
            "parameters": [agent], "security": _AUTH,
            "responses": {**_ok(200, "the AgentCard (A2A protocol)"), **_errors(400, 401, 404, 503)}}},
        "/a2a/{agent}": {"post": {
            "summary": "A2A JSON-RPC: " + ", ".join(A2A_METHODS) + "; a message runs metadata.skill "
                       "(default command:prompt)", "tags": ["a2a"], "externalDocs": see,
            "parameters": [agent], "security": _AUTH,
            "requestBody": {"required": True, "content": {_JSON: {"schema": rpc}}},
            "responses": {"200": {"description": "the JSON-RPC response; SendStreamingMessage and SubscribeToTask "
                                                 "answer an event stream of JSON-RPC responses",
                                  "content": {_JSON: {"schema": {"type": "object"}},
                                              "text/event-stream": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 404, 503)}}},
    }


def openapi_document(*, a2a: bool | None = None) -> dict[str, Any]:
    """The document; ``a2a``: include the ``/a2a`` routes (default: when the a2a-sdk is installed)."""
    paths = _paths()
    if a2a_installed() if a2a is None else a2a:
        paths.update(_a2a_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "nxs-mesh HTTP gateway", "version": VERSION,
                 "description": "HTTP and SSE over the agent mesh; errors are {\"error\", \"field\"}."},
        "paths": paths,
        "components": {"schemas": _schemas(),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
