"""HPUB frames written straight into nats-py's outgoing buffer: a pipelined batch without ``nc.publish``.

``nc.publish`` costs ~3 us of Python per message (two subject regexes, a header ``bytearray`` built
key by key with a regex per key, three coroutine layers, a flusher kick per message). A batch of
JetStream publishes needs none of that per message: its subjects come from ``wire.subjects``, its
reply subjects from the publisher, its header keys from a handful of constants. ``Frames`` builds
the same protocol bytes (``HPUB <subject> <reply> <hdr len> <total len>``, then the header block
``NATS/1.0`` and ``Key: value`` lines, then the payload) and appends them to the client's pending
list, doing the bookkeeping ``nc.publish`` does (stats, pending size; past the pending limit the
caller forces a flush, as nats-py does); the caller kicks the flusher once per chunk (``kick``).

The same checks still hold, more cheaply: a subject with whitespace is refused (it would end the
protocol line; checked once per run of equal subjects), header keys must be RFC 7230 tokens (checked
once per key, then cached), values are trimmed with CR/LF turned into spaces (as nats-py does). Whatever the fast path cannot
take (not connected: nats-py buffers or refuses; over max_payload) goes through ``nc.publish``, so
its errors are exactly nats-py's. When this nats-py lacks the internals used here (``usable``
False), the publisher uses ``nc.publish`` for everything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from nats.aio.client import Client

from nxs_mesh.wire.errors import PublishError

__all__ = ["Frames"]

_INTERNALS: Final = ("_pending", "_pending_data_size", "_max_pending_size", "_max_payload", "_flush_pending", "stats")
_SUBJECT_BAD: Final = re.compile(r"[ \t\r\n]")  # nats-py's own publish check
_KEY_OK: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 7230 token, as nats-py checks keys
_NEWLINES: Final = str.maketrans({"\r": " ", "\n": " "})
_HDR_LINE: Final = "NATS/1.0\r\n"


_keys_ok: set[str] = set()


def header_text(headers: Mapping[str, str]) -> str:
    """The header block nats-py would send for ``headers`` (empty keys skipped, values trimmed, CR/LF
    made spaces), as text: ``NATS/1.0``, a ``Key: value`` line each, an empty line."""
    if len(headers) == 1:  # the usual batch: the dedup id alone
        for key, value in headers.items():
            if key in _keys_ok and value.strip() is value and "\n" not in value and "\r" not in value:
                return f"{_HDR_LINE}{key}: {value}\r\n\r\n"
    lines = [_HDR_LINE]
    for key, value in headers.items():
        if key not in _keys_ok:
            key = _checked_key(key)
            if not key:
                continue
        # str.strip returns the very object when there is nothing to trim: the usual case costs no copy.
        if value.strip() is not value or "\n" in value or "\r" in value:
            value = value.strip().translate(_NEWLINES)
        lines.append(f"{key}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines)


def _checked_key(key: str) -> str:
    key = key.strip()
    if key and not _KEY_OK.fullmatch(key):
        raise PublishError(f"header key {key!r} is not a token (RFC 7230)")
    if key and len(_keys_ok) < 256:  # the mesh's keys are a few constants; bounded all the same
        _keys_ok.add(key)
    return key


class Frames:
    """Appends HPUB frames to one nats-py client's pending buffer (see the module docstring)."""

    __slots__ = ("_nc", "_subject", "bytes_out", "msgs_out", "usable")

    def __init__(self, nc: Client) -> None:
        self._nc: Any = nc  # Any: the attributes used here are nats-py's private ones
        self.usable = all(hasattr(nc, name) for name in _INTERNALS) and isinstance(getattr(nc, "_pending", None), list)
        self.msgs_out = self.bytes_out = 0  # added to nc.stats by kick(), once per chunk
        self._subject = ""  # the last subject checked

    def max_payload(self) -> int:
        """The largest payload a frame may carry now: 0 when frames must go through ``nc.publish``
        (not usable, not connected, draining). Valid until the caller next yields to the loop."""
        nc = self._nc
        if not self.usable or not nc.is_connected or nc.is_draining_pubs:
            return 0
        return int(nc._max_payload)

    def add(self, subject: str, reply: str, data: bytes, headers: Mapping[str, str]) -> bool:
        """Append one frame (``data`` within ``max_payload()``; ``reply`` the publisher's own inbox
        subject, never outside input). True when the buffer is past nats-py's pending limit: the
        caller must ``kick(force=True)`` before appending more."""
        if subject is not self._subject:  # a batch's subjects repeat: checked once per run of them
            if not subject or _SUBJECT_BAD.search(subject):
                raise PublishError(f"subject {subject!r} is empty or has whitespace")
            self._subject = subject
        hdr = header_text(headers)
        if hdr.isascii():  # the usual case: one encode for the protocol line and the headers
            hlen = len(hdr)
            frame = b"".join((f"HPUB {subject} {reply} {hlen} {hlen + len(data)}\r\n{hdr}".encode(), data, b"\r\n"))
        else:
            raw = hdr.encode()
            hlen = len(raw)
            frame = b"".join((f"HPUB {subject} {reply} {hlen} {hlen + len(data)}\r\n".encode(), raw, data, b"\r\n"))
        nc = self._nc
        nc._pending.append(frame)
        nc._pending_data_size += len(frame)
        self.msgs_out += 1
        self.bytes_out += len(data)
        return bool(nc._max_pending_size > 0 and nc._pending_data_size > nc._max_pending_size)

    async def kick(self, *, force: bool = False) -> None:
        """Wake nats-py's flusher for what was appended (``force``: wait until it is written)."""
        nc = self._nc
        if not self.usable:
            return
        nc.stats["out_msgs"] += self.msgs_out
        nc.stats["out_bytes"] += self.bytes_out
        self.msgs_out = self.bytes_out = 0
        await nc._flush_pending(force_flush=force)
