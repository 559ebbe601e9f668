"""Stoplight Prism serving Twilio's own OpenAPI description, for the SMS tests.

Two modes:

- ``mock``: Prism answers from the description itself; requests that break Twilio's schema
  (missing ``To``, no credentials, ...) get 4xx.
- ``proxy``: Prism validates the request, forwards it to ``upstream`` (a small recorder in the
  test), and with ``--errors`` turns a response that breaks the description into a 500; so the
  test sees exactly what the gateway sent and knows both sides match Twilio's contract.

Prism comes from npm into ``tests/.node`` (``make node-tools``); when it is missing this helper
installs it the same way (registry access only, nothing at gateway run time). Without Node the
tests that need it are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / ".node"
PRISM = NODE_DIR / "node_modules" / ".bin" / "prism"
PRISM_PACKAGE = "@stoplight/prism-cli@5.14.2"
SPEC_CANDIDATES = (
    Path(os.environ.get("VOICEGW_TWILIO_OAI", "")),
    ROOT.parent / "shared" / "twilio-oai" / "twilio_api_v2010.json",
    ROOT / "tests" / "fixtures" / "twilio_api_v2010.json",
)
START_TIMEOUT = 90.0  # Prism parses a 1.8 MB description; generous on a loaded 2-core machine


def spec_path() -> Path:
    """Twilio's API description, or skip the test saying where it was looked for."""
    for path in SPEC_CANDIDATES:
        if str(path) not in ("", ".") and path.is_file():
            return path
    pytest.skip("Twilio's OpenAPI description (twilio_api_v2010.json) not found; set VOICEGW_TWILIO_OAI")


def prism_path() -> Path:
    """The Prism executable, installed into tests/.node on first use."""
    if PRISM.exists():
        return PRISM
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (make setup installs nodejs and Prism)")
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund",
                             "--loglevel=error", PRISM_PACKAGE], capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or not PRISM.exists():
        pytest.skip(f"could not install Prism from npm: {result.stderr.strip()[-500:]}")
    return PRISM


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def prism(mode: str = "mock", upstream: str = "") -> AsyncIterator[str]:
    """Run Prism; yields its base URL (``http://127.0.0.1:PORT``)."""
    executable, spec, port = prism_path(), spec_path(), free_port()
    if mode == "mock":
        args = ["mock", "-h", "127.0.0.1", "-p", str(port), str(spec)]
    else:
        args = ["proxy", "--errors", "-h", "127.0.0.1", "-p", str(port), str(spec), upstream]
    proc = await asyncio.create_subprocess_exec(
        str(executable), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"})
    output: list[str] = []
    try:
        async def listening() -> None:
            assert proc.stdout is not None
            while True:
                line = await proc.stdout.readline()
                if not line:
                    raise RuntimeError("Prism exited:\n" + "".join(output[-30:]))
                output.append(line.decode(errors="replace"))
                if "Prism is listening" in output[-1]:
                    return

        await asyncio.wait_for(listening(), START_TIMEOUT)

        async def drain() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                output.append(line.decode(errors="replace"))
                del output[:-200]

        drainer = asyncio.create_task(drain())
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            drainer.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
