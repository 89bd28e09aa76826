"""Every error baxo-mqtt raises on purpose, in one tree.

::

    BaxoMqttError
    ├── ConfigError                 bad settings: stop at start, exit 2
    ├── MqttUnavailableError        no broker within the configured attempts: exit 1
    └── BaxoError                   anything the BAXO API did wrong
        ├── BaxoAuthError           credentials refused (also "API not enabled")
        ├── BaxoHttpError           a non-2xx status the other classes do not cover
        │   └── BaxoRateLimitedError  HTTP 429: wait ``retry_after`` seconds
        ├── BaxoTransportError      connection refused, reset, DNS, TLS
        │   └── BaxoTimeoutError    no answer within ``baxo.timeout_s``
        ├── BaxoDecodeError         the body is not JSON or has the wrong shape
        └── BaxoApiError            a JSON body that reports an error itself

Each ``BaxoError`` carries the operation (``get=`` value), the HTTP status
when there was one, and a short excerpt of the body with secrets removed, so a
log line says what failed without a debugger. ``kind`` is the short name used
as the ``kind`` label of ``baxo_mqtt_poll_errors_total``.
"""

from __future__ import annotations


class BaxoMqttError(Exception):
    """Root of every error baxo-mqtt raises on purpose."""


class ConfigError(BaxoMqttError):
    """The configuration cannot work. ``problems`` holds one line per bad field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class MqttUnavailableError(BaxoMqttError):
    """The broker could not be reached at start within the configured attempts."""


class BaxoError(BaxoMqttError):
    """The BAXO API call did not give a usable answer."""

    kind = "api"

    def __init__(
        self,
        message: str,
        *,
        operation: str = "",
        status: int | None = None,
        excerpt: str = "",
    ) -> None:
        self.message = message
        self.operation = operation
        self.status = status
        self.excerpt = excerpt
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        if self.operation:
            parts.append(f"operation={self.operation}")
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.excerpt:
            parts.append(f"body={self.excerpt!r}")
        return " ".join(parts)


class BaxoAuthError(BaxoError):
    """Username or password refused, or the API is not enabled for the account."""

    kind = "auth"


class BaxoHttpError(BaxoError):
    """A non-2xx HTTP status."""

    kind = "http"


class BaxoRateLimitedError(BaxoHttpError):
    """HTTP 429; the server asked us to wait ``retry_after`` seconds."""

    kind = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float,
        operation: str = "",
        status: int | None = 429,
        excerpt: str = "",
    ) -> None:
        super().__init__(message, operation=operation, status=status, excerpt=excerpt)
        self.retry_after = retry_after


class BaxoTransportError(BaxoError):
    """The request never got an HTTP answer (refused, reset, DNS, TLS)."""

    kind = "connection"


class BaxoTimeoutError(BaxoTransportError):
    """No answer within the configured timeout."""

    kind = "timeout"


class BaxoDecodeError(BaxoError):
    """The body is not JSON, or its JSON lacks the expected shape."""

    kind = "decode"


class BaxoApiError(BaxoError):
    """A JSON body with an ``error``/``message``/``errors`` key instead of data."""

    kind = "api"
