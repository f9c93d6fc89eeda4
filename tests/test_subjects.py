"""Subject scheme (DESIGN.md section 4, the public contract)."""

import pytest

from nxs_mesh.wire import subjects
from nxs_mesh.wire.envelope import Source, new_envelope
from nxs_mesh.wire.errors import EnvelopeError

SRC = Source("nxs-node-001", "main")


@pytest.mark.parametrize(
    ("kind", "kwargs", "subject"),
    [
        ("CHAT", {"to": "nxs-node-002", "agent": "main"}, "nxs.chat.nxs-node-002.main"),
        ("CHAT", {}, "nxs.chat._all._all"),
        ("COMMAND", {"to": "n2", "priority": 7}, "nxs.command.n2._all.p7"),
        ("SYNC", {"to": "n2", "agent": "agent:main:main"}, "nxs.sync.n2.agent:main:main"),
        ("STATUS", {}, "nxs.status.nxs-node-001"),
        ("HEARTBEAT", {}, "nxs.heartbeat.nxs-node-001"),
        ("RESULT", {"correlation_id": "abc"}, "nxs.result.abc"),
        ("TASK", {"metadata": {"capability": "gpu"}, "priority": 3}, "nxs.task.gpu.p3"),
        ("ALERT", {"metadata": {"node": "n3"}}, "nxs.alert.n3"),
    ],
)
def test_subject_for_envelope(kind, kwargs, subject):
    assert subjects.for_envelope(new_envelope(kind, "", source=SRC, **kwargs)) == subject


def test_parse_roundtrip():
    assert subjects.parse("nxs.command.n2._all.p7") == subjects.Subject("command", "n2", "*", 7)
    assert subjects.parse("nxs.chat._all.main") == subjects.Subject("chat", "*", "main")
    assert subjects.parse("nxs.task.gpu.p3").extra == "gpu"
    assert subjects.parse("nxs.dlq.invalid.n1") == subjects.Subject("dlq", instance="n1", extra="invalid")


@pytest.mark.parametrize("bad", ["foo.bar", "nxs.chat", "nxs.command.n1.a.px", "nxs.weird.x.y.z"])
def test_parse_rejects(bad):
    with pytest.raises(EnvelopeError):
        subjects.parse(bad)


def test_filters_cover_addressed_and_broadcast():
    f = subjects.filters_for("command", "n1")
    assert f == ["nxs.command.n1.>", "nxs.command._all.>"]
    assert subjects.filters_for("chat", "n1", "a") == [
        "nxs.chat.n1.a", "nxs.chat.n1._all", "nxs.chat._all.a", "nxs.chat._all._all"]
    assert subjects.filters_for("chat") == ["nxs.chat.>"]


def test_result_without_correlation_is_an_error():
    with pytest.raises(EnvelopeError, match="correlation_id"):
        subjects.for_envelope(new_envelope("RESULT", "", source=SRC))


def test_result_subject_honours_reply_to_then_correlation_then_message_id():
    from nxs_mesh.wire.contract import result_subject

    base = {"source": SRC, "to": "n2"}
    assert result_subject(new_envelope("COMMAND", {"command": "x"}, **base, correlation_id="c-1",
                                       reply_to="nxs.result.elsewhere")) == "nxs.result.elsewhere"
    assert result_subject(new_envelope("COMMAND", {"command": "x"}, **base, correlation_id="c-1")) == "nxs.result.c-1"
    bare = new_envelope("COMMAND", {"command": "x"}, **base)
    assert result_subject(bare) == f"nxs.result.{bare.id}"
    assert subjects.parse(result_subject(bare)).kind == "result"
