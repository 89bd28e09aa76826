"""free_port and port_answers against real sockets."""

from __future__ import annotations

import socket

from baxo_mqtt.ports import free_port, port_answers


def test_a_free_port_does_not_answer_until_something_listens_there() -> None:
    port = free_port()
    assert not port_answers(port)
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert port_answers(port)
