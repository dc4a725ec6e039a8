"""Windows and macOS (issue 23): a virtual module without ptys, and what differs per platform.

The TCP transport serves the simulator's line model over RFC 2217 on 127.0.0.1, so every test
here runs on any system; the suite's flow tests run over it a second time in .ci/run
(RAKFLASH_SIM_TRANSPORT=tcp).
"""

from __future__ import annotations

import time

import pytest

from conftest import FAST_BAUD
from rakflash.link import Link
from rakflash.sim import SimOptions, create


@pytest.fixture
def tcp_module():
    started = []

    def make(name: str = "rak3172", **kw):
        kw.setdefault("baud", FAST_BAUD)
        kw.setdefault("latency_ms", 0.2)
        kw.setdefault("flash_scale", 0.0)
        dev = create(name, SimOptions(transport="tcp", **kw)).start()
        started.append(dev)
        return dev

    yield make
    for dev in started:
        dev.stop()


def ask(link: Link, command: str, timeout: float = 1.0) -> list[bytes]:
    link.discard_input()
    link.write_line(command)
    lines = []
    while (line := link.read_line(timeout)) is not None:
        lines.append(line)
        if line in (b"OK",) or line.startswith(b"AT_"):
            break
    return lines


def test_a_virtual_module_over_tcp_is_an_rfc2217_port_on_this_computer(tcp_module):
    dev = tcp_module("rak3172")
    assert dev.port.startswith("rfc2217://127.0.0.1:")
    with Link(dev.port, FAST_BAUD) as link:
        assert ask(link, "AT+VER=?") == [f"AT+VER={dev.app_version}".encode(), b"OK"]


def test_over_tcp_the_wrong_baud_rate_is_garbage_as_on_a_real_line(tcp_module):
    """RFC 2217 tells the simulator the host's baud rate; a plain socket could not."""
    dev = tcp_module("rak3172", baud=115200)
    with Link(dev.port, 9600) as link:
        answer = ask(link, "AT", 0.5)
        assert b"OK" not in answer
        link.baud = 115200                  # the same open port, now at the module's rate
        assert ask(link, "AT") == [b"OK"]
    assert dev.uart.host_baud() is None     # closed: no host on the line any more


def test_over_tcp_the_host_parity_and_control_lines_reach_the_module(tcp_module):
    dev = tcp_module("rak3172")
    with Link(dev.port, FAST_BAUD) as link:
        assert dev.uart.host_lines() == {"rts": False, "dtr": False}     # opened released
        link.set_lines(rts=True)
        assert dev.uart.host_lines() == {"rts": True, "dtr": False}
        link.set_parity("E")
        assert dev.uart.host_parity() == "E"
        assert ask(link, "AT", 0.5) != [b"OK"]     # 8E1 into an 8N1 console: framing errors


def test_the_line_model_side_channels_work_over_tcp(tcp_module):
    """Faults, the reset button and a pulled cable are the same line model on either transport."""
    from rakflash.errors import PortDisconnected
    dev = tcp_module("rak3172")
    with Link(dev.port, FAST_BAUD) as link:
        dev.uart.faults.drop_rate = 1.0             # everything the host sends is lost
        assert ask(link, "AT", 0.3) == []
        dev.uart.faults.drop_rate = 0.0
        resets = dev.resets
        dev.press_reset()
        deadline = time.monotonic() + 2
        while dev.resets == resets and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dev.resets == resets + 1
        assert ask(link, "AT") == [b"OK"]
        dev.uart.pull_cable()
        with pytest.raises(PortDisconnected):
            for _ in range(20):
                link.write_line("AT")
                link.read_line(0.1)
    new_port = dev.plug_in()
    assert new_port.startswith("rfc2217://") and new_port != link.port_name
    with Link(new_port, FAST_BAUD) as link:
        assert ask(link, "AT") == [b"OK"]
