"""`serve` with several processes refuses a port another `serve` still listens on."""

from __future__ import annotations

import socket

import pytest

from app.ops.serving import listening_socket, serve_processes


def test_a_port_held_by_another_serve_is_refused_before_any_process_starts() -> None:
    running = listening_socket("127.0.0.1", 0)  # what an earlier `serve` process holds (shared socket)
    running.listen()
    port = running.getsockname()[1]
    try:
        with pytest.raises(OSError):
            serve_processes("127.0.0.1", port, 2)
        # A process of the same `serve` may still share it: that is how the processes divide the work.
        sibling = listening_socket("127.0.0.1", port)
        sibling.close()
    finally:
        running.close()


def test_a_free_port_is_probed_and_released() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listening_socket("127.0.0.1", port, share=False).close()
    again = listening_socket("127.0.0.1", port, share=False)  # nothing kept it
    again.close()
