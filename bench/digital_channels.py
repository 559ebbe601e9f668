"""Digital channel figures: chat turn latency through the real core, concurrent chats, link
signing and checking, Twilio webhook signature checks, screen-pop delivery.

Everything runs on loopback in a temp data directory with the embedded defaults (SQLite store,
sample CRM, local SMS outbox). Run: ``.venv/bin/python -m bench.digital_channels``. It prints
figures and never fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
import aiohttp
from twilio.request_validator import RequestValidator

from gateway.agents.tokens import hash_token, new_token
from gateway.app import build_core
from gateway.config import load_settings
from gateway.core.events import ChatMessage
from gateway.links import LinkSigner
from gateway.web.app import start_web

CHAT_TURNS = 40
CONCURRENT_CHATS = 20
LINKS = 5000
SIGNATURES = 2000


def _ms(samples: list[float]) -> str:
    s = sorted(samples)
    p95 = s[min(len(s) - 1, int(len(s) * 0.95))]
    return f"median {statistics.median(s) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms (n={len(s)})"


async def _reply(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Read until the bot's answer to the last message (an ask, offer or hangup) arrives."""
    while True:
        frame = json.loads((await ws.receive(timeout=30)).data)
        if frame["type"] in ("ask", "offer_call", "hangup", "refused", "transfer"):
            return


async def _chat_turns(url: str, turns: int) -> list[float]:
    texts = ["where is my order", "I want to dispute my bill", "what about my appointment", "agent please"]
    samples: list[float] = []
    async with aiohttp.ClientSession() as http:
        for i in range(turns):
            async with http.ws_connect(url + "/chat/ws") as ws:
                await _reply(ws)
                start = time.perf_counter()
                await ws.send_json({"type": "message", "text": texts[i % len(texts)]})
                await _reply(ws)
                samples.append(time.perf_counter() - start)
    return samples


BENCH_TOKEN = new_token("bench")


async def bench_chat(tmp: Path) -> None:
    settings = load_settings(environ={}, overrides={
        "data_dir": str(tmp), "web": {"port": 0}, "outreach": {"enabled": False},
        "chat": {"messages_per_minute": 100000, "ip_messages_per_minute": 100000, "ip_new_chats_per_minute": 100000},
        "agents": {"accounts": {"bench": {"role": "supervisor", "token_hash": hash_token(BENCH_TOKEN)}}}})
    core = await build_core(settings)
    runner = await start_web(settings, core, store=core.store, crm=core.crm)
    try:
        samples = await _chat_turns(runner.url, CHAT_TURNS)
        print(f"chat turn (WebSocket -> real core -> answer), one chat at a time: {_ms(samples)}")
        start = time.perf_counter()
        results = await asyncio.gather(*[_chat_turns(runner.url, 3) for _ in range(CONCURRENT_CHATS)])
        wall = time.perf_counter() - start
        flat = [x for r in results for x in r]
        print(f"{CONCURRENT_CHATS} chats at once: {_ms(flat)}; {len(flat) / wall:.1f} turns/s overall")
        async with aiohttp.ClientSession() as http:
            desk = await http.ws_connect(runner.url + "/agent/ws", headers={"Authorization": f"Bearer {BENCH_TOKEN}"})
            await desk.receive(timeout=10)
            await desk.send_json({"type": "ready", "skills": ["billing", "support"], "languages": ["en"]})
            await desk.receive(timeout=10)
            pops: list[float] = []
            for _ in range(10):
                cid = (await core.open("chat")).conversation_id
                start = time.perf_counter()
                await core.handle(cid, ChatMessage(text="I want to talk to an agent"))
                while json.loads((await desk.receive(timeout=30)).data)["type"] != "screen_pop":
                    pass
                pops.append(time.perf_counter() - start)
            await desk.close()
            print(f"transfer -> screen-pop on the agent desktop socket: {_ms(pops)}")
    finally:
        await runner.close()
        await core.store.close()


def bench_links(tmp: Path) -> None:
    signer = LinkSigner(b"b" * 32, ttl_seconds=3600, used_db=tmp / "links.db")
    start = time.perf_counter()
    tokens = [signer.issue(f"conv-{i}", "upload_document") for i in range(LINKS)]
    issued = time.perf_counter() - start
    start = time.perf_counter()
    for token in tokens:
        signer.verify(token)
    verified = time.perf_counter() - start
    start = time.perf_counter()
    for token in tokens[:1000]:
        signer.consume(token)
    consumed = time.perf_counter() - start
    print(f"links: issue {LINKS / issued:,.0f}/s, verify {LINKS / verified:,.0f}/s, "
          f"verify+use (SQLite) {1000 / consumed:,.0f}/s; token length {len(tokens[0])} chars")
    signer.close()


def bench_signatures() -> None:
    validator = RequestValidator("0123456789abcdef0123456789abcdef")
    url = "https://gateway.example.com/sms/twilio"
    params = {"From": "+15550001111", "To": "+15557654321", "Body": "YES", "MessageSid": "SM" + "1" * 32}
    signature = validator.compute_signature(url, params)
    start = time.perf_counter()
    for _ in range(SIGNATURES):
        assert validator.validate(url, params, signature)
    took = time.perf_counter() - start
    print(f"Twilio webhook signature checks: {SIGNATURES / took:,.0f}/s ({took / SIGNATURES * 1e6:.1f} us each)")


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # the bench's own unrouted transfers would flood the output
    with tempfile.TemporaryDirectory() as tmp:
        bench_links(Path(tmp))
        bench_signatures()
        asyncio.run(bench_chat(Path(tmp)))


if __name__ == "__main__":
    main()
