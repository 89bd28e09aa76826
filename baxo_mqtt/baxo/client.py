"""The BAXO Connect HTTP client: the only module that talks to the API.

Every call is a POST of an ``application/x-www-form-urlencoded`` body to the
base URL, the password included, so the password never appears in a URL, a
proxy log or a server access log (docs/baxo-api.md, decisions 4 and 5). The
client always sends the password rather than relying on the "once a day" rule:
that costs a few bytes and removes a whole class of "which day is it?" failures.

One ``requests.Session`` with a connection pool is shared by every thread;
the bridge fetches realtime batches from a thread pool, so the pool must be
at least as large as that thread pool or threads would queue for a socket.

Retries: reads are idempotent and retried a few times (exponential backoff
with jitter) on timeouts, connection errors, 5xx and 429. A tag write is never
retried: the API gives no way to tell "not applied" from "applied but the
answer was lost", and a duplicated write can do harm on a real instrument.

HTTP 429 sets a "not before" deadline shared by all threads, so that once the
server has asked us to slow down no thread sends anything until it said we may.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal, Protocol, Self, TypeVar

import pydantic
import requests
import structlog
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InsecureRequestWarning

from baxo_mqtt.baxo import models
from baxo_mqtt.baxo.models import Contract, Device, HistoryPage, Reading
from baxo_mqtt.errors import (
    BaxoApiError,
    BaxoAuthError,
    BaxoDecodeError,
    BaxoError,
    BaxoHttpError,
    BaxoRateLimitedError,
    BaxoTimeoutError,
    BaxoTransportError,
)
from baxo_mqtt.logs import MASK, secret_spellings

log = structlog.get_logger(__name__)

ListEncoding = Literal["comma", "repeat", "json"]
RequestObserver = Callable[[str, str, float], None]
Params = list[tuple[str, str]]
T = TypeVar("T")

#: Seconds to wait after a 429 that carries no usable ``Retry-After``.
DEFAULT_RETRY_AFTER_S = 30.0
#: The longest hold a 429 can impose: a bogus ``Retry-After`` of a year must
#: not freeze the bridge; an hour is already longer than any sane rate limit.
MAX_RETRY_AFTER_S = 3600.0
#: A 429 asking for a longer pause than this is not retried inside the call:
#: the caller gets ``BaxoRateLimitedError`` at once and decides what to do,
#: rather than a thread blocking for minutes. The shared deadline still holds.
MAX_RETRY_AFTER_IN_CALL_S = 60.0
#: Longest pause between two attempts, whatever the attempt number.
MAX_BACKOFF_S = 30.0
#: Errors keep this much of the response body, after redaction.
EXCERPT_CHARS = 200

# An error text containing one of these is about the account, not the request:
# the user must fix credentials or ask the administrator to enable the API.
_AUTH_WORDS = (
    "auth",  # authentication, authentification, unauthorized, authorization
    "password",
    "mot de passe",
    "credential",
    "login",
    "forbidden",
    "not enabled",
    "non activ",
    "pas activ",
)


class BaxoConnection(Protocol):
    """The ``[baxo]`` settings the client reads."""

    @property
    def base_url(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> pydantic.SecretStr: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def verify_tls(self) -> bool: ...
    @property
    def list_encoding(self) -> ListEncoding: ...


def encode_list(name: str, items: Sequence[str], encoding: ListEncoding) -> Params:
    """Form parameters for a list, in the shape ``encoding`` names (decision 1)."""
    if encoding == "comma":
        return [(name, ",".join(items))]
    if encoding == "repeat":
        return [(name, item) for item in items]
    return [(name, json.dumps(list(items)))]


def parse_retry_after(header: str | None, now: datetime | None = None) -> float:
    """``Retry-After`` (delta-seconds or HTTP-date) -> seconds to wait, in
    0 .. ``MAX_RETRY_AFTER_S``; ``DEFAULT_RETRY_AFTER_S`` when absent or unreadable."""
    if not header:
        return DEFAULT_RETRY_AFTER_S
    text = header.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER_S
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return DEFAULT_RETRY_AFTER_S
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


class Redactor:
    """Removes the account's secrets from any text before it leaves the client.

    The password is removed in the spellings a server might echo it in, the
    same ones the log redactor knows (``logs.secret_spellings``). The username
    (an e-mail address) goes too: it is personal data and says nothing useful
    in an error excerpt.
    """

    __slots__ = ("_secrets",)

    def __init__(self, password: str, username: str) -> None:
        spellings = secret_spellings(password) | secret_spellings(username)
        # Longest first, so a secret containing another is removed whole.
        self._secrets = sorted(spellings, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def excerpt(self, text: str) -> str:
        """The first ``EXCERPT_CHARS`` characters of ``text``, secrets removed.

        The whole text is redacted before the cut: cutting first could leave
        the start of a secret at the end of the excerpt.
        """
        return self(text)[:EXCERPT_CHARS]


def _mentions_auth(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _AUTH_WORDS)


def _error_text(document: object) -> str | None:
    """The API's own error message when ``document`` is an error object."""
    if isinstance(document, dict):
        for key in models.ERROR_KEYS:
            if key in document:
                return str(document[key])
    return None


def _json_error_text(response: requests.Response) -> str:
    """The ``error``/``message`` text of a JSON body, or "" (an HTML error page
    full of "login" links must not pass for an authentication failure)."""
    try:
        document: object = json.loads(response.content)
    except ValueError:
        return ""
    return _error_text(document) or ""


def _is_retryable(error: BaxoError) -> bool:
    if isinstance(error, BaxoTransportError | BaxoRateLimitedError):
        return True
    return isinstance(error, BaxoHttpError) and error.status is not None and error.status >= 500


def _no_http_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


class BaxoClient:
    """The eight BAXO API operations, typed, thread-safe, with bounded retries.

    ``max_retries`` is the number of extra attempts after the first one, for
    reads only. ``on_request(operation, outcome, seconds)`` is called once per
    HTTP attempt, with outcome ``"ok"`` or the error's ``kind``, for metrics.
    """

    def __init__(
        self,
        connection: BaxoConnection,
        *,
        on_request: RequestObserver | None = None,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        pool_size: int = 16,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self._base_url = connection.base_url
        self._username = connection.username
        self._password = connection.password
        self._timeout_s = connection.timeout_s
        self._list_encoding: ListEncoding = connection.list_encoding
        self._on_request = on_request
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._redact = Redactor(connection.password.get_secret_value(), connection.username)
        self._base_origin = _origin(connection.base_url)

        self._session = requests.Session()
        # requests' own retries are off: ours know which operations are idempotent.
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.headers["Accept"] = "application/json"
        self._session.verify = connection.verify_tls
        # Credentials travel in the body, never as HTTP auth. Setting an auth
        # that does nothing also stops requests from reading ~/.netrc on every
        # request (a file lookup per poll batch), while proxy variables from
        # the environment still apply.
        self._session.auth = _no_http_auth
        if not connection.verify_tls:
            # Turning verification off is the user's explicit choice; say so once
            # here rather than letting urllib3 warn on every single request.
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
            log.warning(
                "baxo TLS certificate verification is disabled",
                base_url=self._base_url,
                setting="baxo.verify_tls",
            )

        self._rate_lock = threading.Lock()
        self._not_before = 0.0  # time.monotonic() before which nothing is sent
        self._closed = threading.Event()

    def __repr__(self) -> str:
        return f"BaxoClient(base_url={self._base_url!r})"

    # --- operations -----------------------------------------------------------

    def contracts(self) -> list[Contract]:
        return self._read("contracts", [], "contracts", models.parse_contracts)

    def devices(self, contract_id: str) -> list[Device]:
        params = [("contractId", contract_id)]
        return self._read("devices", params, "devices", models.parse_devices)

    def device(self, contract_id: str, device_id: str) -> Device:
        params = [("contractId", contract_id), ("deviceId", device_id)]
        return self._read("device", params, "device", models.parse_device)

    def realtime(
        self,
        contract_id: str,
        device_ids: Sequence[str],
        tags: Sequence[str] | None = None,
    ) -> list[Reading]:
        """Current values. ``tags`` None or empty means every tag.

        One device uses the single-device form, whose answer names no device,
        so its readings are stamped with the id asked for.
        """
        params = self._device_params(contract_id, device_ids) + self._tag_params(tags)
        single = device_ids[0] if len(device_ids) == 1 else None

        def parse(document: object) -> list[Reading]:
            return models.parse_realtime(document, default_device_id=single)

        return self._read("devices-realtimes", params, "logs", parse)

    def history_pages(
        self,
        contract_id: str,
        device_ids: Sequence[str],
        start: int,
        end: int,
        tags: Sequence[str] | None = None,
    ) -> Iterator[HistoryPage]:
        """History between BAXO times ``start`` and ``end``, one page at a time.

        Lazy: no request is sent before the first page is asked for, and each
        ``next`` page only when the previous one has been consumed. ``next`` is
        followed with a POST to that URL carrying only the credentials: its
        query already says which page it is.
        """
        params = self._device_params(contract_id, device_ids)
        params += [("startTime", str(start)), ("endTime", str(end))]
        params += self._tag_params(tags)
        single = device_ids[0] if len(device_ids) == 1 else None
        return self._pages(params, single)

    def write_tag(self, contract_id: str, device_id: str, tag_ref: str, value: str) -> None:
        """Set one tag. Any 2xx is success unless its JSON body holds an ``error``
        (decision 10). Sent exactly once: a write is never retried."""
        operation = "devices-tags-write"
        params = [
            ("contractId", contract_id),
            ("deviceId", device_id),
            ("tagRef", tag_ref),
            ("value", value),
        ]
        self._attempt_once(operation, self._base_url, self._form(operation, params))

    def close(self) -> None:
        """Release the sockets. A thread waiting on a backoff or a 429 wakes and fails."""
        self._closed.set()
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- parameters -------------------------------------------------------------

    def _form(self, operation: str, params: Params) -> Params:
        return [
            ("get", operation),
            ("username", self._username),
            ("password", self._password.get_secret_value()),
            *params,
        ]

    def _credentials(self) -> Params:
        return [("username", self._username), ("password", self._password.get_secret_value())]

    def _device_params(self, contract_id: str, device_ids: Sequence[str]) -> Params:
        if isinstance(device_ids, str):
            raise TypeError("device_ids must be a sequence of ids, not one string")
        if not device_ids:
            raise ValueError("at least one device id is needed")
        if len(device_ids) == 1:
            return [("contractId", contract_id), ("deviceId", device_ids[0])]
        return [
            ("contractId", contract_id),
            *encode_list("deviceIdentifiers", device_ids, self._list_encoding),
        ]

    def _tag_params(self, tags: Sequence[str] | None) -> Params:
        if isinstance(tags, str):
            raise TypeError("tags must be a sequence of tag references, not one string")
        return encode_list("tagReferences", tags, self._list_encoding) if tags else []

    # --- paging -------------------------------------------------------------------

    def _pages(self, params: Params, single_device: str | None) -> Iterator[HistoryPage]:
        operation = "devices-historics"
        url = self._base_url
        form = self._form(operation, params)
        followed: set[str] = set()

        def parse(document: object) -> HistoryPage:
            return models.parse_history(document, default_device_id=single_device)

        while True:
            page = self._read_document(operation, url, form, "historics", parse)
            yield page
            if page.next_url is None:
                return
            url = self._next_page_url(operation, page.next_url)
            if url in followed:
                # A server handing back a page it already gave would loop forever.
                raise BaxoDecodeError(
                    "history paging loops back to a page already read", operation=operation
                )
            followed.add(url)
            form = self._credentials()

    def _next_page_url(self, operation: str, next_url: str) -> str:
        """The ``next`` URL, made safe to send credentials to.

        The credentials go in the body of a POST to this URL, so it must point
        at the same host as the configured API (an absolute URL to another host
        would hand the password to whoever wrote it), and any ``password`` the
        server may have put in its query is dropped: it never travels in a URL.
        """
        url = urllib.parse.urljoin(self._base_url, next_url)
        parts = urllib.parse.urlsplit(url)
        scheme, host, port = _origin(url)
        base_scheme, base_host, base_port = self._base_origin
        same_origin = (scheme, port) == (base_scheme, base_port)
        upgraded = base_scheme == "http" and scheme == "https"
        if host != base_host or not (same_origin or upgraded):
            raise BaxoDecodeError(
                "history 'next' URL points away from the configured API; not following it",
                operation=operation,
                excerpt=self._redact.excerpt(f"{scheme}://{host}"),
            )
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        kept = [(key, value) for key, value in query if key.lower() != "password"]
        if len(kept) != len(query):
            parts = parts._replace(query=urllib.parse.urlencode(kept))
        return urllib.parse.urlunsplit(parts)

    # --- requests ---------------------------------------------------------------

    def _read(
        self, operation: str, params: Params, expected_key: str, parse: Callable[[object], T]
    ) -> T:
        form = self._form(operation, params)
        return self._read_document(operation, self._base_url, form, expected_key, parse)

    def _read_document(
        self,
        operation: str,
        url: str,
        form: Params,
        expected_key: str,
        parse: Callable[[object], T],
    ) -> T:
        """One idempotent read, retried on transient failures, parsed by ``parse``."""
        attempt = 0
        while True:
            try:
                return self._attempt_read(operation, url, form, expected_key, parse)
            except BaxoError as error:
                if attempt >= self._max_retries or not _is_retryable(error):
                    raise
                if isinstance(error, BaxoRateLimitedError):
                    if error.retry_after > MAX_RETRY_AFTER_IN_CALL_S:
                        raise
                    delay = 0.0  # the shared deadline already holds the next attempt back
                else:
                    delay = min(MAX_BACKOFF_S, self._backoff_s * 2**attempt) * random.uniform(
                        0.5, 1.5
                    )
                attempt += 1
                # Debug only: the caller decides what a failure is worth telling.
                log.debug(
                    "baxo request retry",
                    operation=operation,
                    attempt=attempt,
                    max_retries=self._max_retries,
                    error_kind=error.kind,
                    status=error.status,
                    delay_s=round(delay, 3),
                )
                self._pause(delay, operation)

    def _attempt_read(
        self,
        operation: str,
        url: str,
        form: Params,
        expected_key: str,
        parse: Callable[[object], T],
    ) -> T:
        self._wait_for_rate_limit(operation)
        started = time.perf_counter()
        outcome = "ok"
        try:
            response = self._send(operation, url, form)
            document = self._decode(operation, response, expected_key)
            try:
                return parse(document)
            except BaxoError as error:
                # The parsers know the shape, not the HTTP exchange: add it.
                error.status = response.status_code
                error.excerpt = error.excerpt or self._redact.excerpt(response.text)
                raise
        except BaxoError as error:
            outcome = error.kind
            raise
        finally:
            self._observe(operation, outcome, time.perf_counter() - started)

    def _attempt_once(self, operation: str, url: str, form: Params) -> None:
        self._wait_for_rate_limit(operation)
        started = time.perf_counter()
        outcome = "ok"
        try:
            response = self._send(operation, url, form)
            self._check_write_body(operation, response)
        except BaxoError as error:
            outcome = error.kind
            raise
        finally:
            self._observe(operation, outcome, time.perf_counter() - started)

    def _observe(self, operation: str, outcome: str, seconds: float) -> None:
        if self._on_request is not None:
            self._on_request(operation, outcome, seconds)

    def _send(self, operation: str, url: str, form: Params) -> requests.Response:
        """POST ``form`` to ``url``; any status other than 2xx raises."""
        if self._closed.is_set():
            raise BaxoTransportError("the client was closed", operation=operation)
        try:
            response = self._session.post(
                url,
                data=form,
                timeout=self._timeout_s,
                # A redirect turns a POST into a GET without its body: the call
                # would silently lose its parameters. Better to fail and say so.
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise BaxoTimeoutError(
                f"no answer within {self._timeout_s:g} s", operation=operation
            ) from exc
        except requests.RequestException as exc:
            # requests reports a timeout while reading the body as a ConnectionError.
            if "ReadTimeoutError" in repr(exc):
                raise BaxoTimeoutError(
                    f"no answer within {self._timeout_s:g} s", operation=operation
                ) from exc
            _, host, port = _origin(url)
            raise BaxoTransportError(
                f"cannot reach the BAXO API at {host}:{port}: {self._redact(_root_cause(exc))}",
                operation=operation,
            ) from exc
        if not 200 <= response.status_code < 300:
            raise self._status_error(operation, response)
        return response

    def _wait_for_rate_limit(self, operation: str) -> None:
        """Hold this thread until the last 429's ``Retry-After`` has passed.

        Called before the attempt's clock starts, so the request-duration
        metric measures the API, not our own politeness.
        """
        with self._rate_lock:
            wait = self._not_before - time.monotonic()
        if wait > 0:
            self._pause(wait, operation)

    def _pause(self, seconds: float, operation: str) -> None:
        """Sleep, but wake at once and fail when ``close()`` is called meanwhile."""
        closed = self._closed.wait(seconds) if seconds > 0 else self._closed.is_set()
        if closed:
            raise BaxoTransportError("the client was closed", operation=operation)

    def _hold_requests_for(self, seconds: float) -> None:
        with self._rate_lock:
            self._not_before = max(self._not_before, time.monotonic() + seconds)

    # --- answers ------------------------------------------------------------------

    def _status_error(self, operation: str, response: requests.Response) -> BaxoError:
        status = response.status_code
        excerpt = self._redact.excerpt(response.text)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self._hold_requests_for(retry_after)
            log.debug(
                "baxo API asked to slow down",
                operation=operation,
                retry_after_s=retry_after,
            )
            return BaxoRateLimitedError(
                f"rate limited: retry after {retry_after:g} s",
                retry_after=retry_after,
                operation=operation,
                excerpt=excerpt,
            )
        if status in (401, 403) or (status < 500 and _mentions_auth(_json_error_text(response))):
            return BaxoAuthError(
                "the BAXO API refused the account (check username/password, "
                "and that the API is enabled for it)",
                operation=operation,
                status=status,
                excerpt=excerpt,
            )
        if 300 <= status < 400:
            return BaxoHttpError(
                "the BAXO API answered with a redirect; set baxo.base_url to the final address",
                operation=operation,
                status=status,
                excerpt=excerpt,
            )
        return BaxoHttpError(f"HTTP {status}", operation=operation, status=status, excerpt=excerpt)

    def _decode(self, operation: str, response: requests.Response, expected_key: str) -> object:
        try:
            document: object = json.loads(response.content)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both
            raise BaxoDecodeError(
                "the answer is not JSON",
                operation=operation,
                status=response.status_code,
                excerpt=self._redact.excerpt(response.text),
            ) from None
        if not isinstance(document, dict):
            raise BaxoDecodeError(
                f"expected a JSON object, got {type(document).__name__}",
                operation=operation,
                status=response.status_code,
                excerpt=self._redact.excerpt(response.text),
            )
        if expected_key not in document:
            error_text = _error_text(document)
            if error_text is not None:
                raise self._api_error(operation, response, error_text)
            raise BaxoDecodeError(
                f"the answer has no {expected_key!r} key",
                operation=operation,
                status=response.status_code,
                excerpt=self._redact.excerpt(response.text),
            )
        return document

    def _api_error(self, operation: str, response: requests.Response, error_text: str) -> BaxoError:
        message = self._redact.excerpt(error_text)
        error_class = BaxoAuthError if _mentions_auth(message) else BaxoApiError
        return error_class(
            f"the BAXO API reported an error: {message}",
            operation=operation,
            status=response.status_code,
            excerpt=self._redact.excerpt(response.text),
        )

    def _check_write_body(self, operation: str, response: requests.Response) -> None:
        if not response.content.strip():
            return
        try:
            document: object = json.loads(response.content)
        except ValueError:
            return  # a non-JSON 200 is success for a write (decision 10)
        if isinstance(document, dict) and "error" in document:
            raise self._api_error(operation, response, str(document["error"]))


def _root_cause(error: BaseException) -> str:
    """The innermost reason of a requests failure, e.g. ``[Errno 111] Connection refused``.

    requests wraps the socket error three times over (ConnectionError ->
    MaxRetryError -> NewConnectionError -> OSError), and the wrappers' texts
    repeat the URL and object addresses before the reason; cutting that text
    to a length used to cut away the one part that says what went wrong.
    """
    seen: set[int] = set()
    current = error
    while id(current) not in seen:
        seen.add(id(current))
        inner = (
            getattr(current, "reason", None)  # urllib3's MaxRetryError and ProtocolError
            or current.__cause__
            or current.__context__
            or next((arg for arg in current.args if isinstance(arg, BaseException)), None)
        )
        if not isinstance(inner, BaseException):
            break
        current = inner
    if isinstance(current, OSError) and current.strerror:
        return f"[Errno {current.errno}] {current.strerror}"
    return f"{type(current).__name__}: {current}" if str(current) else type(current).__name__


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    default_port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), parts.port or default_port
