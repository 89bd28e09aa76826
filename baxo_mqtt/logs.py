"""Logging: structlog for our code, one output for everything, and no secret in it.

Records from structlog and from the standard ``logging`` module (paho and
urllib3 log through it) all end in one ``logging`` handler whose
``ProcessorFormatter`` runs the same chain on both:

    context bound with structlog.contextvars (operation, contract, device)
    -> level and logger name -> ISO 8601 UTC timestamp
    -> exception formatted into text -> secrets replaced by ``***`` -> renderer

The redactor comes after the exception is turned into text, so a password that an
exception message quotes is caught too, and it is the last step before the
renderer, so nothing added later can bring a secret back. Routing the libraries'
records through the same formatter is what keeps them from bypassing it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TextIO
from urllib.parse import quote, quote_plus

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

#: What a secret is replaced with.
MASK = "***"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Our handler on the root logger carries this name, so that configuring again
# replaces it instead of printing every line twice.
_HANDLER_NAME = "baxo-mqtt"


def configure_logging(
    level: str,
    fmt: Literal["auto", "console", "json"],
    secrets: Sequence[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Send every log record, structlog's and the stdlib's, to ``stream`` (stderr).

    ``fmt="auto"`` renders for a human on a terminal and JSON lines otherwise.
    Calling it again replaces the previous configuration.
    """
    output = sys.stderr if stream is None else stream
    try:
        threshold = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}") from None

    before_formatting: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*before_formatting, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Caching would pin loggers to the first configuration; this runs once per
        # process in production, and more often in tests.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=before_formatting,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets(secrets),
            _renderer(fmt, output),
        ],
    )
    handler = logging.StreamHandler(output)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for previous in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(threshold)


def _renderer(fmt: Literal["auto", "console", "json"], stream: TextIO) -> Processor:
    terminal = _is_terminal(stream)
    if fmt == "console" or (fmt == "auto" and terminal):
        # Colour codes only on a terminal: a console log written to a file stays plain.
        return structlog.dev.ConsoleRenderer(colors=terminal)
    return structlog.processors.JSONRenderer()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def redact_secrets(secrets: Iterable[str]) -> Processor:
    """A processor replacing every secret, as written or URL/JSON-encoded, with ``***``.

    It reaches into nested dicts, lists and tuples. Any other object becomes its
    ``repr`` first (the renderers would call ``repr`` anyway, after redaction had
    run), so a secret inside an object's representation is caught as well.
    """
    forms = _secret_forms(secrets)
    if not forms:
        return _unchanged
    # Longest first, so a secret that contains another is replaced whole.
    pattern = re.compile("|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True)))

    def redact_text(text: str) -> str:
        # Removing one occurrence can join its neighbours into a new one ("a" + "a*" + "x"
        # with the secret "a*" leaves "a***x"), so repeat until nothing changes. It ends:
        # each round removes characters other than "*", or shortens the text.
        while True:
            redacted = pattern.sub(MASK, text)
            if redacted == text:
                return text
            text = redacted

    def redact(value: Any) -> Any:
        if isinstance(value, str):
            return redact_text(value)
        if isinstance(value, dict):
            return {
                redact_text(key) if isinstance(key, str) else key: redact(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [redact(item) for item in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return redact_text(repr(value))

    def processor(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        return {key: redact(value) for key, value in event_dict.items()}

    return processor


def secret_spellings(secret: str) -> set[str]:
    """``secret`` in every spelling it may take in a log line, an error or a body.

    As written; URL-encoded in a path (``/`` kept and not) and in a form
    (``+`` for a space); JSON-escaped, with and without ``\\u`` escapes for
    non-ASCII text. A secret or spelling that is part of the mask itself ("*",
    "**", "***") is left out: it cannot be told apart from a redaction, and
    replacing it would never end. An empty secret has no spelling.
    """
    if not secret or secret in MASK:
        return set()
    spellings = {
        secret,
        quote(secret),
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    return {spelling for spelling in spellings if spelling and spelling not in MASK}


def _secret_forms(secrets: Iterable[str]) -> set[str]:
    forms: set[str] = set()
    for secret in secrets:
        forms |= secret_spellings(secret)
    return forms


def _unchanged(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    return event_dict


def set_level(level: str) -> None:
    """Change the level of every logger until restart (the ``log_level`` bridge request).

    Only the threshold changes: the format and the secret redaction stay as
    ``configure_logging`` set them.
    """
    threshold = _LEVELS[level.lower()]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(threshold))
    logging.getLogger().setLevel(threshold)
