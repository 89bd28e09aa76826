"""logs.py: the redaction processor on plain dicts, and the configured output end to end."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import select
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from baxo_mqtt.baxo.client import Redactor
from baxo_mqtt.logs import MASK, configure_logging, redact_secrets, secret_spellings

SECRET = "hunter2 & co/100%"


def redact(event_dict: dict[str, Any], secrets: list[str]) -> Any:
    return redact_secrets(secrets)(None, "info", event_dict)


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


# --- the processor on plain dicts ------------------------------------------------------------


def test_a_secret_is_replaced_wherever_it_appears_in_a_string() -> None:
    out = redact({"event": f"login with {SECRET} failed", "password": SECRET}, [SECRET])
    assert out == {"event": f"login with {MASK} failed", "password": MASK}


def test_nested_dicts_lists_and_tuples_are_redacted() -> None:
    event = {"event": "x", "body": {"form": [f"password={SECRET}", ("a", SECRET)]}}
    out = redact(event, [SECRET])
    assert out["body"] == {"form": [f"password={MASK}", ["a", MASK]]}


def test_nested_keys_are_redacted_and_other_keys_kept() -> None:
    out = redact({"event": "x", "by_user": {SECRET: 1, 7: 2, ("a", "b"): 3}}, [SECRET])
    assert out["by_user"] == {MASK: 1, 7: 2, ("a", "b"): 3}


def test_url_and_json_encoded_forms_are_redacted() -> None:
    encoded = {
        "path_style": quote(SECRET, safe=""),
        "form_style": quote_plus(SECRET),
        "json_style": json.dumps({"password": 'a"b\\c'}),
    }
    out = redact(encoded, [SECRET, 'a"b\\c'])
    assert out == {"path_style": MASK, "form_style": MASK, "json_style": '{"password": "***"}'}


def test_other_objects_are_redacted_through_their_repr() -> None:
    out = redact({"event": "failed", "error": RuntimeError(f"bad {SECRET}")}, [SECRET])
    assert out["error"] == f"RuntimeError('bad {MASK}')"


def test_plain_values_keep_their_type() -> None:
    event = {"event": "poll", "count": 3, "ratio": 0.5, "ok": True, "none": None}
    assert redact(event, [SECRET]) == event


def test_no_secrets_leaves_the_event_untouched() -> None:
    event = {"event": "x", "value": "hunter2"}
    assert redact(event, []) is event
    assert redact(event, [""]) is event


def test_the_longest_secret_wins_when_one_contains_another() -> None:
    assert redact({"event": "abcdef"}, ["abc", "abcdef"]) == {"event": MASK}


def test_replacing_cannot_assemble_a_new_occurrence() -> None:
    # "a" + "a*" -> "a***", which still holds "a*": a single pass would leave it.
    out = redact({"event": "aa*"}, ["a*"])
    assert "a*" not in out["event"]


secrets = st.text(min_size=1).filter(lambda text: text not in MASK)


@given(secret=secrets, before=st.text(), after=st.text())
def test_no_secret_survives_in_any_text(secret: str, before: str, after: str) -> None:
    event = {
        "event": before + secret + after,
        "nested": {"list": [after + secret, quote(secret, safe="") + before]},
    }
    # Top-level keys are field names chosen by the code, so only values are searched.
    for text in strings_in(list(redact(event, [secret]).values())):
        assert secret not in text


@given(secret=secrets, other=st.text())
def test_text_without_the_secret_is_unchanged(secret: str, other: str) -> None:
    if secret in other or MASK in other:
        return
    if any(form in other for form in secret_spellings(secret)):
        return
    assert redact({"event": other}, [secret]) == {"event": other}


def test_a_secret_is_spelled_as_written_url_encoded_and_json_escaped() -> None:
    assert secret_spellings('a b/é"') == {
        'a b/é"',
        "a%20b/%C3%A9%22",
        "a%20b%2F%C3%A9%22",
        "a+b%2F%C3%A9%22",
        'a b/\\u00e9\\"',
        'a b/é\\"',
    }
    assert secret_spellings("") == set()
    # Part of the mask: indistinguishable from a redaction, so never replaced.
    assert secret_spellings("**") == set()


@given(secret=secrets, username=st.text(max_size=10), before=st.text(), after=st.text())
def test_the_client_and_the_logs_remove_the_same_spellings(
    secret: str, username: str, before: str, after: str
) -> None:
    client_redact = Redactor(secret, username)
    for spelling in secret_spellings(secret):
        text = before + spelling + after
        assert spelling not in client_redact(text)
        logged = redact({"event": text}, [secret])["event"]
        assert spelling not in logged
        assert MASK in logged


# --- configured output -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_output_redacts_values_exceptions_and_stdlib_records() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", [SECRET], stream)
    log = structlog.get_logger("baxo_mqtt.test")
    log.info("request sent", body=f"username=me&password={quote_plus(SECRET)}")
    try:
        raise ValueError(f"server echoed {SECRET}")
    except ValueError:
        log.exception("request failed")
    logging.getLogger("urllib3.connectionpool").warning("retrying with %s", SECRET)

    output = stream.getvalue()
    assert SECRET not in output
    assert quote_plus(SECRET) not in output
    sent, failed, foreign = json_lines(stream)
    assert sent["body"] == f"username=me&password={MASK}"
    assert "ValueError: server echoed ***" in failed["exception"]
    assert failed["level"] == "error"
    assert foreign == {
        "event": f"retrying with {MASK}",
        "level": "warning",
        "logger": "urllib3.connectionpool",
        "timestamp": foreign["timestamp"],
    }


def test_timestamps_are_iso_8601_utc() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    structlog.get_logger().info("tick")
    stamp = json_lines(stream)[0]["timestamp"]
    assert stamp.endswith("Z")
    moment = datetime.fromisoformat(stamp)
    assert moment.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 60


def test_bound_context_reaches_structlog_and_stdlib_records() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    structlog.contextvars.bind_contextvars(operation="devices-realtimes", contract="c-1")
    structlog.get_logger().info("polled", device="42")
    logging.getLogger("paho").info("packet")
    ours, paho = json_lines(stream)
    assert (ours["operation"], ours["contract"], ours["device"]) == (
        "devices-realtimes",
        "c-1",
        "42",
    )
    assert (paho["operation"], paho["contract"]) == ("devices-realtimes", "c-1")


def test_records_below_the_level_are_dropped_from_both_paths() -> None:
    stream = io.StringIO()
    configure_logging("WARNING", "json", stream=stream)
    structlog.get_logger().info("hidden")
    logging.getLogger("paho").info("hidden too")
    structlog.get_logger().warning("shown")
    logging.getLogger("paho").error("shown too")
    assert [line["event"] for line in json_lines(stream)] == ["shown", "shown too"]


def test_debug_level_lets_debug_records_through() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    structlog.get_logger().debug("detail", n=1)
    (line,) = json_lines(stream)
    assert (line["event"], line["level"], line["n"]) == ("detail", "debug", 1)


def test_configuring_again_replaces_the_previous_output() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", ["old-secret"], first)
    configure_logging("info", "json", ["new-secret"], second)
    structlog.get_logger().info("once", value="new-secret")
    logging.getLogger("paho").info("stdlib once")
    assert first.getvalue() == ""
    assert [line["event"] for line in json_lines(second)] == ["once", "stdlib once"]
    assert json_lines(second)[0]["value"] == MASK


def test_auto_format_writes_json_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("info", "auto", stream=stream)
    structlog.get_logger().info("hello", n=1)
    assert json_lines(stream)[0]["event"] == "hello"


def test_console_format_is_plain_text_without_colours_off_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("info", "console", [SECRET], stream)
    structlog.get_logger().info("hello", password=SECRET)
    text = stream.getvalue()
    assert "hello" in text
    assert f"password={MASK}" in text
    assert "\x1b[" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_auto_format_renders_for_humans_on_a_terminal() -> None:
    controller, terminal_fd = pty.openpty()
    with (
        os.fdopen(terminal_fd, "w", buffering=1) as terminal,
        os.fdopen(controller, "rb") as reader,
    ):
        configure_logging("info", "auto", [SECRET], terminal)
        structlog.get_logger().info("hello terminal", password=SECRET)
        terminal.flush()
        received = b""
        while b"hello terminal" not in received or not received.endswith(b"\n"):
            ready, _, _ = select.select([reader], [], [], 5.0)
            assert ready, f"nothing more came out of the terminal after {received!r}"
            received += os.read(controller, 4096)
    text = received.decode()
    assert "\x1b[" in text  # coloured: rendered for a human, not as JSON
    assert SECRET not in text
    assert MASK in text


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging("loud", "json", stream=io.StringIO())
