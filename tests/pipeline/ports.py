"""Loopback ports for the services tests start (GCS emulator, Beam worker pool)."""
from __future__ import annotations

import socket
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc, timeout: float, interval: float = 0.1) -> bool:
    """True once something listens on 127.0.0.1:port; False if `proc` exits first or `timeout` seconds pass."""
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                return False
            time.sleep(interval)
