"""AT reply parsing for the three consoles (RUI3 app, RUI v3 app, RUI bootloader)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rakflash.at import format_reply, looks_like_text, parse_reply


@pytest.fixture
def d(cat):
    return cat.dialects


def test_rui3_query_reply(d):
    r = parse_reply(d["rui3"], "AT+VER=?", ["AT+VER=RUI_4.0.6_RAK3172-E", "OK"])
    assert r.ok and r.value == "RUI_4.0.6_RAK3172-E"


def test_rui3_error_word(d):
    r = parse_reply(d["rui3"], "AT+FOO", ["AT_COMMAND_NOT_FOUND"])
    assert r.status == "error" and r.error == "AT_COMMAND_NOT_FOUND"


def test_rui3_incomplete_reply_is_none(d):
    assert parse_reply(d["rui3"], "AT+VER=?", ["AT+VER=RUI_4.0.6_RAK3172-E"]).status == "none"


def test_rui_v3_ok_with_info_and_error_code(d):
    r = parse_reply(d["rui-v3"], "at+version", ["OK V3.0.0.14.H"])
    assert r.ok and r.value == "V3.0.0.14.H"
    e = parse_reply(d["rui-v3"], "at+foo", ["ERROR: 1"])
    assert e.status == "error" and "not supported" in e.error


def test_bootloader_console_has_no_ok(d):
    r = parse_reply(d["rui-boot"], "at+version", ["<BOOT MODE>", "RUI_BOOT_0.8_STM32WLE5CC"])
    assert r.ok and r.value == "RUI_BOOT_0.8_STM32WLE5CC"
    e = parse_reply(d["rui-boot"], "AT", ["AT not support."])
    assert e.status == "error"


printable = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)


@settings(max_examples=200)
@given(dialect=st.sampled_from(["rui3", "rui-v3", "rui-boot"]), value=printable,
       name=st.text(st.characters(whitelist_categories=("Lu",)), min_size=1, max_size=10))
def test_reply_round_trip(cat, dialect, value, name):
    """Whatever value a device sends, the parser gives it back unchanged."""
    d = cat.dialects[dialect]
    command = f"AT+{name}=?"
    if dialect == "rui3" and (value in d["errors"] or value == "OK" or value == "?"):
        return   # "AT+X=?" as an answer is indistinguishable from the echo of the query
    if dialect == "rui-boot" and (value in (d["unsupported"], d["banner"]) or value.upper() == command):
        return   # the console's own words, or the echo of the command
    if dialect == "rui-v3" and value.startswith(("ERROR:", "OK")):
        return
    lines = format_reply(d, command, value)
    r = parse_reply(d, command, lines)
    assert r.ok and r.value == value


@settings(max_examples=300)
@given(dialect=st.sampled_from(["rui3", "rui-v3", "rui-boot"]),
       lines=st.lists(st.text(max_size=80), max_size=6))
def test_parser_never_crashes_on_garbage(cat, dialect, lines):
    r = parse_reply(cat.dialects[dialect], "AT+VER=?", lines)
    assert r.status in ("ok", "error", "none")


def test_text_detection():
    assert looks_like_text(b"AT+VER=RUI_4.0.6\r\nOK\r\n")
    assert not looks_like_text(bytes(range(128, 200)))
    assert not looks_like_text(b"")
