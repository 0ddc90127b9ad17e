"""free_port: a loopback port nothing listens on, that a server can then bind."""
from __future__ import annotations

import socket

from trimtab.common.ports import LOOPBACK, free_port


def test_free_port_can_be_bound_and_is_in_the_ephemeral_range():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind((LOOPBACK, port))           # would raise EADDRINUSE if something held it
        s.listen()
        with socket.create_connection((LOOPBACK, port), timeout=2):
            pass


def test_free_port_is_not_one_already_listening():
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert all(free_port() != taken for _ in range(20))
