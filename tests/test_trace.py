"""Traces: what --trace records can be read back and replayed against the protocol code."""

from __future__ import annotations

import json
import random
import threading
from pipes import pipe

import pytest

from rakflash.protocols.ymodem import YmodemReceiver, YmodemSender
from rakflash.trace import TraceReplay, TraceWriter, read_trace


class Recording:
    """A channel wrapper that traces what passes, as Link does."""

    def __init__(self, inner, trace: TraceWriter) -> None:
        self.inner, self.trace = inner, trace

    def write(self, data: bytes) -> None:
        self.trace.data("tx", data)
        self.inner.write(data)

    def read(self, n: int, timeout: float) -> bytes:
        data = self.inner.read(n, timeout)
        if data:
            self.trace.data("rx", data)
        return data


def record_session(path, data: bytes) -> None:
    host, dev = pipe()
    trace = TraceWriter(path)
    t = threading.Thread(target=lambda: YmodemReceiver(dev, max_size=1 << 20, read_timeout=0.05).receive(),
                         daemon=True)
    t.start()
    YmodemSender(Recording(host, trace), ack_timeout=0.5, erase_timeout=1, start_timeout=1,
                 byte_time=0).send("fw.bin", data)
    t.join(2)
    trace.close()


def test_trace_format_is_json_lines_with_header(tmp_path):
    path = tmp_path / "s.trace"
    record_session(path, b"hello" * 100)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["trace"] == "rakflash"
    events = read_trace(path)
    assert {e["ev"] for e in events} == {"tx", "rx"}
    assert all("hex" in e and "text" in e and "t" in e for e in events)


def test_replaying_a_recorded_session_drives_the_sender_again(tmp_path):
    data = random.Random(4).randbytes(3000)
    path = tmp_path / "s.trace"
    record_session(path, data)
    replay = TraceReplay(read_trace(path))
    YmodemSender(replay, ack_timeout=0.1, erase_timeout=0.1, start_timeout=0.1, byte_time=0).send("fw.bin", data)


def test_replay_notices_a_different_conversation(tmp_path):
    path = tmp_path / "s.trace"
    record_session(path, b"a" * 2000)
    replay = TraceReplay(read_trace(path))
    with pytest.raises(AssertionError, match="unexpected byte"):
        YmodemSender(replay, ack_timeout=0.1, erase_timeout=0.1, start_timeout=0.1, byte_time=0).send("fw.bin", b"b" * 2000)


def test_not_a_trace_is_refused(tmp_path):
    p = tmp_path / "x.trace"
    p.write_text('{"hello": 1}\n')
    with pytest.raises(ValueError):
        read_trace(p)
