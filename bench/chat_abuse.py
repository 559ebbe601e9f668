"""Abuse from the outside: a chat flood and slow HTTP clients against a running ``voicegw serve``,
with an honest customer at the same address the whole time.

Unless ``--url`` is given, it starts ``voicegw serve`` (web only: no voice channels, defaults
otherwise, data in a temp directory) from ``--code`` (default: this tree; point it at another
checkout to compare), and reads that process's CPU time. Everything runs from 127.0.0.1, so
the flooders and the honest customer share one client address, as behind one NAT. The
flooders send a spoofed ``X-Forwarded-For`` (not from a trusted proxy: it must change
nothing), flood each chat as fast as it takes frames, and reconnect for a fresh conversation
when thrown out. Run: ``.venv/bin/python -m bench.chat_abuse [--seconds 30]``. It prints figures
and never fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
HONEST_EVERY = 3.0
"""The honest customer sends a message every 3 s (a fast typist, at the quiet pace of
``gateway.digital.chat_limits``) and a new visitor comes every 5 s."""
NEW_VISITOR_EVERY = 5.0
BURST = 200
"""Messages a flooder sends on one socket before it waits to be thrown out."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(samples: list[float]) -> str:
    if not samples:
        return "none"
    s = sorted(samples)
    p95 = s[min(len(s) - 1, int(len(s) * 0.95))]
    return f"median {statistics.median(s) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {s[-1] * 1000:.0f} ms (n={len(s)})"


async def flooder(url: str, stop: float, stats: Counter[str]) -> None:
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < stop:
            spoof = {"X-Forwarded-For": f"203.0.113.{random.randint(1, 254)}"}
            try:
                ws = await http.ws_connect(url + "/chat/ws", headers=spoof)
            except aiohttp.WSServerHandshakeError as exc:
                stats[f"handshake {exc.status}"] += 1
                await asyncio.sleep(0.05)
                continue
            stats["chats opened"] += 1

            async def read() -> None:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        frame = json.loads(msg.data)
                        if frame["type"] == "accepted":
                            stats["messages accepted"] += 1
                        elif frame["type"] == "refused":
                            stats[f"refused {frame['code']}"] += 1
                stats[f"closed {ws.close_code}"] += 1

            reader = asyncio.create_task(read())
            try:
                for i in range(BURST):
                    if ws.closed or time.monotonic() >= stop:
                        break
                    await ws.send_json({"type": "message", "text": f"spam {i} " + "x" * 40})
                    stats["messages sent"] += 1
            except ConnectionError:
                pass
            await asyncio.wait([reader], timeout=max(0.0, min(2.0, stop - time.monotonic())))
            reader.cancel()
            await ws.close()


async def honest_customer(url: str, stop: float, out: dict[str, Any]) -> None:
    accepted: list[float] = []
    replied: list[float] = []
    refused: list[str] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "/chat/ws") as ws:
        texts = ["where is my order"] + ["repeat that"] * 1000
        pending: float | None = None
        sent_at = 0.0
        n = 0
        while time.monotonic() < stop and not ws.closed:
            now = time.monotonic()
            if pending is None and now - sent_at >= HONEST_EVERY:
                sent_at = pending = now
                await ws.send_json({"type": "message", "text": texts[n]})
                n += 1
            try:
                msg = await ws.receive(timeout=0.2)
            except asyncio.TimeoutError:
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame["type"] == "accepted" and pending is not None:
                accepted.append(time.monotonic() - pending)
            elif frame["type"] == "refused":
                refused.append(frame["code"])
                pending = None
            elif frame["type"] in ("ask", "say") and pending is not None:
                replied.append(time.monotonic() - pending)
                pending = None
        out.update(sent=n, accepted=accepted, replied=replied, refused=refused, open=not ws.closed)


async def new_visitors(url: str, stop: float, out: Counter[str]) -> None:
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < stop:
            await asyncio.sleep(NEW_VISITOR_EVERY)
            try:
                async with http.ws_connect(url + "/chat/ws") as ws:
                    await ws.receive(timeout=10)
                    out["opened"] += 1
            except aiohttp.WSServerHandshakeError as exc:
                out[f"refused {exc.status}"] += 1


async def slow_client(host: str, port: int, stop: float, cuts: list[float], answers: Counter[str]) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        answers["connect failed"] += 1
        return
    start = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n")
    received = b""
    try:
        while time.monotonic() < stop:
            try:
                data = await asyncio.wait_for(reader.read(4096), 1.0)
            except asyncio.TimeoutError:
                writer.write(b"X-Slow: %d\r\n" % random.randint(0, 10**6))  # one header line a second
                continue
            if not data:
                cuts.append(time.monotonic() - start)
                answers[received.split(b"\r\n", 1)[0].decode(errors="replace") or "closed silently"] += 1
                return
            received += data
        answers["still open at the end"] += 1
    except ConnectionError:
        cuts.append(time.monotonic() - start)
        answers["reset"] += 1
    finally:
        writer.close()


async def healthz(url: str, stop: float, samples: list[float], failures: Counter[str]) -> None:
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < stop:
            start = time.monotonic()
            try:
                async with http.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    await resp.read()
                    if resp.status == 200:
                        samples.append(time.monotonic() - start)
                    else:
                        failures[str(resp.status)] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                failures[type(exc).__name__] += 1
            await asyncio.sleep(0.5)


async def run(url: str, seconds: float, flooders: int, slow: int, pid: int | None) -> None:
    host, port = url.split("//", 1)[1].split(":")
    honest: dict[str, Any] = {}
    visitors: Counter[str] = Counter()
    stats: Counter[str] = Counter()
    cuts: list[float] = []
    slow_answers: Counter[str] = Counter()
    health: list[float] = []
    health_failures: Counter[str] = Counter()
    cpu0, t0 = (_cpu_seconds(pid) if pid else 0.0), time.monotonic()
    stop = t0 + seconds
    honest_task = asyncio.create_task(honest_customer(url, stop, honest))
    await asyncio.sleep(1.0)  # the honest customer's chat is open before the flood starts
    tasks = [asyncio.create_task(flooder(url, stop, stats)) for _ in range(flooders)]
    tasks += [asyncio.create_task(slow_client(host, int(port), stop, cuts, slow_answers)) for _ in range(slow)]
    tasks += [asyncio.create_task(new_visitors(url, stop, visitors)),
              asyncio.create_task(healthz(url, stop, health, health_failures))]
    await asyncio.gather(honest_task, *tasks)
    wall = time.monotonic() - t0
    cpu = (_cpu_seconds(pid) - cpu0) if pid else None
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        metrics = [line for line in (await resp.text()).splitlines()
                   if line.startswith(("voicegw_chat_refused_total", "voicegw_http_header_timeouts_total",
                                       "voicegw_sessions_refused_total", "voicegw_chat_sessions_total"))]
    print(f"{wall:.0f} s, {flooders} flooders and {slow} slow HTTP clients, all from 127.0.0.1 (spoofed X-Forwarded-For)")
    print(f"  flood: {stats['messages sent']} messages sent ({stats['messages sent'] / wall:.0f}/s), "
          f"{stats['messages accepted']} accepted, "
          + ", ".join(f"{v} {k}" for k, v in sorted(stats.items()) if k.startswith(("refused", "closed", "handshake")))
          + f"; {stats['chats opened']} chats opened")
    print(f"  honest customer at the same address: {honest.get('sent', 0)} messages, "
          f"{len(honest.get('accepted', []))} accepted, refused {Counter(honest.get('refused', [])) or 'never'}, "
          f"chat still open: {honest.get('open')}")
    print(f"    accepted after {_ms(honest.get('accepted', []))}")
    print(f"    answered after {_ms(honest.get('replied', []))}")
    print(f"  new visitors at the same address (one every {NEW_VISITOR_EVERY:.0f} s): {dict(visitors) or 'none'}")
    print(f"  slow header senders: {dict(slow_answers)}; cut after {_ms(cuts)}")
    print(f"  /healthz every 0.5 s: {_ms(health)}; failures {dict(health_failures) or 'none'}")
    if cpu is not None:
        print(f"  gateway CPU: {cpu:.1f} s over {wall:.0f} s ({cpu / wall * 100:.0f} % of one core)")
    for line in metrics:
        print("  " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running gateway (default: start voicegw serve)")
    parser.add_argument("--code", default=str(ROOT), help="source tree voicegw serve runs from")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--flooders", type=int, default=8)
    parser.add_argument("--slow", type=int, default=100)
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url.rstrip("/"), args.seconds, args.flooders, args.slow, None))
        return
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        config = Path(tmp) / "gateway.yaml"
        config.write_text(f"data_dir: {tmp}/data\nlog_level: WARNING\n"
                          f"web: {{port: {port}, public_url: 'http://127.0.0.1:{port}'}}\n"
                          "audiosocket: {enabled: false}\nfastagi: {enabled: false}\n"
                          "twilio_media: {enabled: false}\noutreach: {enabled: false}\n")
        env = dict(os.environ, PYTHONPATH=args.code)
        log = open(Path(tmp) / "gateway.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(config), "serve"],
                                cwd=args.code, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.1)
            print(f"voicegw serve from {args.code} (pid {proc.pid}) on {url}")
            asyncio.run(run(url, args.seconds, args.flooders, args.slow, proc.pid))
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()
            lines = (Path(tmp) / "gateway.log").read_text(errors="replace").splitlines()
            warnings = Counter(" ".join(line.split()[3:6]) for line in lines if " WARNING " in line)
            print(f"  gateway log: {len(lines)} lines; most frequent warnings: {warnings.most_common(4)}")


if __name__ == "__main__":
    main()
