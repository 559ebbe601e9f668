"""Helpers for the SIP tests: the gateway's SIP channel in a subprocess, SIPp, the softphone."""

from __future__ import annotations

import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
PYTHON = sys.executable

pytestmark = pytest.mark.sip


def free_port(kind: int = socket.SOCK_DGRAM, span: int = 2) -> int:
    """A port free for both UDP and TCP on loopback, with the ``span - 1`` after it (RTCP; SIPp's
    media port ``-mp`` also takes the two after those for video)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port % 2 or port > 60000:
            continue
        try:
            for p in range(port, port + span):
                for k in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, k) as t:
                        t.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


class GatewayProc:
    """The SIP channel (with a fake or the real pipeline) in its own process."""

    def __init__(self, spec: dict[str, Any], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "tests.sip.gateway_proc", json.dumps(spec)], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.expect("ready", timeout=30)
        self.port: int = ready["port"]
        self.ports: dict[str, int] = ready.get("ports", {})

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith("{"):
                try:
                    self.events.put(json.loads(line))
                except ValueError:
                    pass
        self.events.put({"event": "exited"})

    def expect(self, event: str, timeout: float = 20, where: Callable[[dict[str, Any]], bool] | None = None
               ) -> dict[str, Any]:
        """The next event named ``event`` (matching ``where``); fails after ``timeout``."""
        for seen in self.seen:
            if seen["event"] == event and (where is None or where(seen)):
                self.seen.remove(seen)
                return seen
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} event within {timeout} s; log:\n{self.tail()}")
            try:
                ev = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if ev["event"] == "exited" and event != "exited":
                raise AssertionError(f"gateway process exited waiting for {event!r}; log:\n{self.tail()}")
            if ev["event"] == event and (where is None or where(ev)):
                return ev
            self.seen.append(ev)

    def all_events(self, event: str) -> list[dict[str, Any]]:
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                break
        return [e for e in self.seen if e["event"] == event]

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def stats(self) -> dict[str, Any]:
        self.send(cmd="stats")
        return self.expect("stats", timeout=10)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 40) -> str:
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def close(self) -> int:
        if self.proc.poll() is None:
            try:
                self.send(cmd="quit")
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProc]]:
    procs: list[GatewayProc] = []

    def start(**spec: Any) -> GatewayProc:
        spec.setdefault("data_dir", str(tmp_path / "data"))
        gw = GatewayProc(spec, tmp_path / f"gateway-{len(procs)}.log")
        procs.append(gw)
        return gw

    yield start
    for gw in procs:
        gw.close()


@pytest.fixture(params=[0, 2], ids=["in-process", "2-workers"])
def start_any_gateway(request: pytest.FixtureRequest, start_gateway: Callable[..., GatewayProc]
                      ) -> Callable[..., GatewayProc]:
    """``start_gateway`` twice over: the SIP endpoint in the gateway process, then two SIP worker
    processes behind the SIP front (``sip.workers``); ``.workers`` tells which."""
    workers: int = request.param

    def start(**spec: Any) -> GatewayProc:
        if workers:
            spec["sip"] = {**spec.get("sip", {}), "workers": workers}
        return start_gateway(**spec)

    start.workers = workers  # type: ignore[attr-defined]
    return start


def run_sipp(scenario: str, target: str, tmp_path: Path, *, timeout: float = 40, uas: bool = False,
             port: int = 0, extra: list[str] | None = None, subst: dict[str, str] | None = None,
             background: bool = False) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    """Run one SIPp scenario (UDP, loopback, one call); returns the finished process."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed (Debian package sip-tester, in the Makefile's APT_PACKAGES)")
    text = (SCENARIOS / scenario).read_text()
    for key, value in (subst or {}).items():
        text = text.replace(key, value)
    xml = tmp_path / scenario
    xml.write_text(text)
    port = port or free_port()
    cmd = ["sipp", "-sf", str(xml), "-i", "127.0.0.1", "-p", str(port), "-mp", str(free_port(span=4)),
           "-m", "1", "-nostdin", "-timeout", f"{int(timeout)}s", "-timeout_error", "-trace_err",
           "-trace_msg", "-message_file", str(tmp_path / f"{scenario}.msg.log"),
           "-error_file", str(tmp_path / f"{scenario}.err.log"), "-trace_logs",
           "-log_file", str(tmp_path / f"{scenario}.log"), "-s", "bot"]
    if not uas:
        cmd.append(target)
    cmd += extra or []
    kwargs: dict[str, Any] = {"cwd": tmp_path, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    if background:
        return subprocess.Popen(cmd, **kwargs)
    return subprocess.run(cmd, timeout=timeout + 20, **kwargs)


def sipp_log(tmp_path: Path, scenario: str) -> str:
    parts = []
    for suffix in (".msg.log", ".err.log", ".log"):
        p = tmp_path / f"{scenario}{suffix}"
        if p.exists():
            parts.append(p.read_text(errors="replace")[-6000:])
    return "\n".join(parts)


def run_softphone(uri: str, tmp_path: Path, *args: str, timeout: float = 90, background: bool = False
                  ) -> Any:
    """The softphone in its own process (it needs the process's one pjsua2 endpoint)."""
    cmd = [PYTHON, "-m", "gateway.telephony.sip.softphone", uri, "--json", *args]
    kwargs: dict[str, Any] = {"cwd": ROOT, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True,
                              "env": {**os.environ, "PYTHONUNBUFFERED": "1"}}
    if background:
        return subprocess.Popen(cmd, **kwargs)
    return subprocess.run(cmd, timeout=timeout, **kwargs)


def softphone_results(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def write_tone(path: Path, seconds: float, freq: float = 700.0, rate: int = 8000) -> Path:
    import numpy as np

    from gateway.voice.audio import write_wav

    t = np.arange(int(seconds * rate)) / rate
    write_wav(path, (np.sin(2 * np.pi * freq * t) * 9000).astype("<i2").tobytes(), rate)
    return path


def write_ulaw_tone(path: Path, seconds: float, freq: float = 700.0) -> Path:
    import numpy as np

    from gateway.voice.audio import ulaw_encode

    t = np.arange(int(seconds * 8000)) / 8000
    path.write_bytes(ulaw_encode((np.sin(2 * np.pi * freq * t) * 9000).astype("<i2").tobytes()))
    return path


def check_tone_calls(procs: list[subprocess.Popen[str]], gw: GatewayProc, n: int, *, min_voiced_rx: int) -> None:
    """The ``n`` calls the softphone processes ``procs`` placed to a tone gateway: each answered
    (PCMU), the bot's tone heard with clean audio, and the caller's tone reached each session."""
    results: list[dict[str, Any]] = []
    err = ""
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results += softphone_results(out)
    assert len(results) == n, err[-3000:]
    for r in results:
        assert r["answered"] and r["codec"] == "PCMU", r
        assert r["voiced_rx"] >= min_voiced_rx, r  # the bot's tone heard by every caller
        assert r["gaps"] <= 25, r  # clean audio; a few frames of slack for a loaded CI machine
    stopped = [gw.expect("session_stopped", timeout=30) for _ in range(n)]
    assert len({s["call_id"] for s in stopped}) == n
    for s in stopped:
        assert s["voiced_in"] >= 100, s  # the caller's 3 s tone reached each session
