"""A real ``redis-server`` for tests, on a free loopback port in a temporary directory.

Use the fixtures from any test module (or a conftest)::

    from tests.redis_server import redis_server, redis_url  # noqa: F401  (pytest fixtures)

    async def test_something(redis_url):            # an empty database for this test
        ...

``redis_server`` (one server per test module) yields a :class:`RedisServer`; ``redis_url``
flushes its database before each test and gives its URL. Tests are skipped with a clear reason
only when the ``redis-server`` binary is missing (``make test`` installs it via apt).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

START_TIMEOUT_SECONDS = 20.0  # generous: a loaded 2-core CI machine


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stored_bytes(client: Any, key: bytes) -> bytes:
    """What Redis holds under ``key``, uncompressed: every member, field and value of it joined.
    (``DUMP`` is no substitute: its LZF compression turns a word into back-references whenever
    three of its letters came earlier in the value, a random hex id's among them, so a search
    for the word in it finds nothing though the word is kept.)"""
    kind = client.type(key)
    if kind == b"string":
        parts = [client.get(key) or b""]
    elif kind == b"hash":
        parts = [b for pair in client.hgetall(key).items() for b in pair]
    elif kind == b"list":
        parts = client.lrange(key, 0, -1)
    elif kind == b"set":
        parts = sorted(client.smembers(key))
    elif kind == b"zset":
        parts = [member for member, _score in client.zrange(key, 0, -1, withscores=True)]
    elif kind == b"stream":
        parts = [b for _id, fields in client.xrange(key) for pair in fields.items() for b in pair]
    elif kind == b"none":  # gone between the scan and the read
        parts = []
    else:
        raise AssertionError(f"a Redis key {key!r} of type {kind!r} the tests cannot read")
    return b"\x00".join(parts)


def _command(port: int, line: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(line)
        return sock.recv(256)


class RedisServer:
    """One ``redis-server`` process; ``url`` points at database 0.

    ``durable``: an append-only file fsynced at every write, so that :meth:`stop` then
    :meth:`start` (same port, same directory) brings every key back, as an operator's Redis
    restart does. :meth:`freeze` and :meth:`thaw` stop and resume the process (a Redis that
    hangs instead of refusing)."""

    def __init__(self, directory: Path, *, durable: bool = False) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise FileNotFoundError("redis-server")
        self.directory = directory
        self.durable = durable
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        for _attempt in range(3):  # another test may grab the port between probe and bind
            if self._launch(free_port()):
                return
        raise RuntimeError(f"redis-server did not start; see the logs in {directory}")

    def _launch(self, port: int) -> bool:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        log = open(self.directory / f"redis-{port}.log", "ab")
        proc = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", *persistence, "--daemonize", "no", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        if self._wait_ready(proc, port):
            self.port, self.process = port, proc
            return True
        proc.kill()
        proc.wait(timeout=5)
        return False

    def start(self) -> None:
        """Start again on the same port after :meth:`stop` (a durable server keeps its keys)."""
        if self.process is not None and self.process.poll() is None:
            return
        if not self._launch(self.port):
            raise RuntimeError(f"redis-server did not start again on port {self.port}; see {self.directory}")

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    @staticmethod
    def _wait_ready(proc: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                if _command(port, b"PING\r\n").startswith(b"+PONG"):
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        """Empty every database."""
        if not _command(self.port, b"FLUSHALL\r\n").startswith(b"+OK"):
            raise RuntimeError("FLUSHALL failed")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a frozen server cannot stop
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A running redis-server for the test module (skipped if the binary is missing)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server, or run `make test`)")
    with tempfile.TemporaryDirectory(prefix="voicegw-redis-") as directory:
        server = RedisServer(Path(directory))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty Redis database for this test."""
    redis_server.flush()
    return redis_server.url
