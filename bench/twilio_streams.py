"""How many concurrent Twilio Media Streams one gateway process holds (telephony path only).

    .venv/bin/python -m bench.twilio_streams [--calls 10 50] [--seconds 6] [--vad webrtc]

The gateway side runs in this process: the real ``/media/twilio`` route (aiohttp WebSocket,
JSON + base64 + mu-law both ways, the shared 20 ms clock) and the real voice pipeline (VAD,
endpointing, playback), with the recognizer replaced by a no-op and the synthesizer by a tone
(see ``bench._common``), so the figures are the cost of the Media Streams path. The
callers run in another process: each plays Twilio (``connected``, ``start``, then a ``media``
message of 20 ms of speech-like noise every 20 ms) and timestamps the ``media`` it receives.

Reported per load: gateway CPU and CPU per call, the worst lateness of the 20 ms tick, media
messages received per call-second (the bot talks about half the time: a 0.8 s tone after
each turn), the worst gap between two frames inside a prompt, and calls that ended early.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os

import numpy as np

from bench._common import WARMUP_SECONDS, caller_audio, run_callers, start_pipeline

PROMPT_GAP = 0.1
"""Two received frames closer than this belong to one prompt (for the in-prompt gap figure)."""


async def _one_caller(url: str, seconds: float, seed: int) -> dict[str, float]:
    import aiohttp

    from gateway.voice.audio import ulaw_encode

    audio = ulaw_encode(caller_audio(seconds + WARMUP_SECONDS, seed))
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    sid = f"MZbench{seed:08d}"
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, max_msg_size=1 << 20)
        await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send_str(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
            "accountSid": "AC0", "streamSid": sid, "callSid": f"CAbench{seed:08d}", "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"from": f"+1555{seed:07d}"}}}))

        async def receive() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT and '"media"' in msg.data:
                    arrivals.append(loop.time())

        task = asyncio.create_task(receive())
        start = loop.time()
        frames = len(audio) // 160
        for n in range(frames):
            if task.done():
                break
            payload = base64.b64encode(audio[n * 160:(n + 1) * 160]).decode()
            await ws.send_str(json.dumps({"event": "media", "sequenceNumber": str(n + 2), "streamSid": sid,
                                          "media": {"track": "inbound", "chunk": str(n + 1),
                                                    "timestamp": str(n * 20), "payload": payload}}))
            await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - loop.time()))
        early = task.done()
        await ws.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    measured = np.array([t for t in arrivals if t >= start + WARMUP_SECONDS])
    gaps = np.diff(measured) if len(measured) > 2 else np.array([0.0])
    inside = gaps[gaps < PROMPT_GAP]
    return {"received": float(len(measured)), "max_gap": float(inside.max()) if len(inside) else 0.0,
            "early": float(early)}


async def run_load(calls: int, seconds: float, vad: str) -> dict[str, float]:
    from aiohttp import web

    from gateway.telephony.twilio_media_server import TwilioMediaServer

    settings, pipeline = await start_pipeline(vad)
    server = TwilioMediaServer(settings, pipeline)
    app = web.Application()
    server.add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    run = await run_callers(_one_caller, f"ws://127.0.0.1:{port}/media/twilio", calls, seconds,
                            connected=lambda: len(server.streams), pacer=server.pacer)
    await server.close()
    await runner.cleanup()
    await pipeline.close()
    results = run.results
    return {
        **run.figures(),
        "media_per_call_s": sum(r["received"] for r in results) / calls / seconds,
        "prompt_max_gap_ms": 1000 * max(r["max_gap"] for r in results),
        "ended_early": sum(r["early"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--vad", default="webrtc", choices=["webrtc", "silero"])
    args = parser.parse_args()
    print(f"Twilio Media Streams, {args.seconds:.0f} s per load, vad {args.vad}, {os.cpu_count()} CPUs")
    print(f"{'calls':>5} {'cpu %':>7} {'cpu ms/call/s':>14} {'tick late max':>14} {'media/call/s':>13} "
          f"{'gap in prompt':>14} {'ended early':>12}")
    for calls in args.calls:
        r = asyncio.run(run_load(calls, args.seconds, args.vad))
        print(f"{r['calls']:>5} {r['cpu_pct']:>7.1f} {r['cpu_ms_per_call_s']:>14.2f} "
              f"{r['tick_max_late_ms']:>11.1f} ms {r['media_per_call_s']:>13.1f} "
              f"{r['prompt_max_gap_ms']:>11.1f} ms {r['ended_early']:>12.0f}")


if __name__ == "__main__":
    main()
