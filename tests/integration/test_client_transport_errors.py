"""A request that never gets an HTTP answer says why, where, in a few words."""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from baxo_mqtt.baxo.client import BaxoClient
from baxo_mqtt.errors import BaxoTimeoutError, BaxoTransportError
from baxo_mqtt.settings import BaxoSettings


def client_for(url: str, password: str = "demo") -> BaxoClient:
    settings = BaxoSettings(
        base_url=url, username="demo@example.com", password=SecretStr(password), timeout_s=2
    )
    return BaxoClient(settings, max_retries=0)


def transport_error(url: str, password: str = "demo") -> BaxoTransportError:
    with client_for(url, password) as client, pytest.raises(BaxoTransportError) as caught:
        client.contracts()
    return caught.value


def closed_port() -> int:
    """A port nothing listens on: bound once, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def hanging_up_server() -> Iterator[int]:
    """Accepts each connection and closes it at once, without an answer."""
    listener = socket.create_server(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.recv(65536)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    listener.close()
    thread.join(5)


def test_a_closed_port_names_host_port_and_the_errno_text() -> None:
    port = closed_port()
    error = transport_error(f"http://127.0.0.1:{port}/k1")
    assert not isinstance(error, BaxoTimeoutError)
    refused = f"[Errno {errno.ECONNREFUSED}] {os.strerror(errno.ECONNREFUSED)}"
    assert error.message == f"cannot reach the BAXO API at 127.0.0.1:{port}: {refused}"
    assert str(error) == f"{error.message} operation=contracts"


def test_a_server_hanging_up_without_an_answer_is_named_as_such(hanging_up_server: int) -> None:
    message = transport_error(f"http://127.0.0.1:{hanging_up_server}/k1").message
    assert message.startswith(f"cannot reach the BAXO API at 127.0.0.1:{hanging_up_server}: ")
    assert "Remote end closed connection without response" in message or "reset" in message
    assert "object at 0x" not in message, "no wrapper noise, only the cause"


def test_an_unknown_host_keeps_the_resolver_reason() -> None:
    message = transport_error("http://no-such-host.invalid:8080/k1").message
    assert message.startswith("cannot reach the BAXO API at no-such-host.invalid:8080: [Errno ")
    assert len(message) < 160


def test_the_password_never_appears_in_a_transport_error() -> None:
    password = "s3cr3t-Pa55"
    text = str(transport_error(f"http://127.0.0.1:{closed_port()}/k1", password))
    assert password not in text
    assert "demo@example.com" not in text
