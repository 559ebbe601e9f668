"""Attacks on the agent side, played over real sockets against the real core.

- an agent of queue ``orders`` reads a ``billing`` transfer (REST, cookie or Bearer; the socket);
- guessing tokens, from one address and from several;
- a short configured token; a token in a URL; a token in the log (in-process and `voicegw serve`);
- a read that would not be audited; the audit log read by a non-admin;
- a session kept after its account was rotated or removed.
Each fails on the desktop before accounts, roles and the audit log existed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.agents.accounts import AccountError, AccountsFile, Role
from gateway.agents.tokens import hash_token, new_token
from gateway.app import start_gateway
from gateway.context.audit import RedisAuditLog
from tests.agents.helpers import bearer, desk, jar, no_frame, real_gateway, transferred
from tests.digital.helpers import AGENT_ACCOUNTS, AGENT_TOKENS, recv_until, sign_in, web_settings
from tests.redis_server import free_port

ROOT_TOKEN = new_token("root")
WITH_ADMIN = {"accounts": {**AGENT_ACCOUNTS, "root": {"role": "admin", "token_hash": hash_token(ROOT_TOKEN)}}}


def from_address(address: str, cookies: bool = False) -> aiohttp.ClientSession:
    """A client whose connections come from ``address`` (any 127.x.y.z reaches the gateway on Linux)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)),
                                 cookie_jar=jar() if cookies else None)


async def test_an_orders_agent_cannot_read_a_billing_transfer(tmp_path):
    async with real_gateway(tmp_path, agents=WITH_ADMIN) as (core, runner):
        async with aiohttp.ClientSession() as http:
            bob = await desk(http, runner.url, "bob", ["billing", "disputes"])  # claims the skills: not enough
            alice = await desk(http, runner.url, "alice", ["billing"])
            cid = await transferred(core, "billing")
            assert (await recv_until(alice, "screen_pop"))["conversation_id"] == cid
            await no_frame(bob)  # the socket: no screen-pop (nor a queue entry) of a billing conversation to bob
            await bob.send_json({"type": "accept", "conversation_id": cid})  # nor may he take it
            refused = await recv_until(bob, "refused")
            assert refused["code"] == "forbidden" and "not routed to bob" in refused["message"]
            await alice.send_json({"type": "accept", "conversation_id": cid})
            assert (await recv_until(alice, "active"))["context"]["customer"]["name"] == "Alice Martin"
            url = f"{runner.url}/api/conversations/{cid}/context"
            async with http.get(url, headers=bearer("bob")) as resp:  # REST with his token
                assert resp.status == 403 and resp.content_type == "application/json"
                error = (await resp.json())["error"]
                assert "not routed to bob" in error and "Alice" not in await resp.text()
            async with aiohttp.ClientSession(cookie_jar=jar()) as signed_in:  # REST with his desktop session
                await sign_in(signed_in, runner.url, "bob")
                async with signed_in.get(url) as resp:
                    assert resp.status == 403
            async with http.get(url, headers=bearer("sam")) as resp:  # a supervisor reads every conversation
                assert resp.status == 200 and (await resp.json())["customer"]["name"] == "Alice Martin"
            async with http.get(url, headers=bearer("alice")) as resp:  # an agent of the queue does too
                assert resp.status == 200
            await bob.close()
            await alice.close()
            # every successful read is in the audit log, with who, role, how, when and from where
            async with http.get(f"{runner.url}/api/audit", params={"conversation_id": cid},
                                headers={"Authorization": f"Bearer {ROOT_TOKEN}"}) as resp:
                assert resp.status == 200
                entries = (await resp.json())["entries"]
            reads = [(e["actor"], e["role"], e["action"], e["detail"]["via"]) for e in entries
                     if e["action"].startswith("read")]
            assert reads == [("alice", "agent", "read", "rest"), ("sam", "supervisor", "read", "rest"),
                             ("bob", "agent", "read_refused", "rest"), ("bob", "agent", "read_refused", "rest"),
                             ("alice", "agent", "read", "page"), ("alice", "agent", "read", "screen-pop")]
            assert all(e["detail"]["address"] == "127.0.0.1" and e["at"].startswith("20") for e in entries
                       if e["action"].startswith("read"))
            assert ("system", "assigned") in [(e["actor"], e["action"]) for e in entries]  # on accepting
            assert ("bob", "accept_refused") in [(e["actor"], e["action"]) for e in entries]
            for who in ("sam", "alice"):  # the audit log is for admins
                async with http.get(f"{runner.url}/api/audit", headers=bearer(who)) as resp:
                    assert resp.status == 403 and "admin" in (await resp.json())["error"]


async def test_a_read_that_cannot_be_audited_shows_nothing(tmp_path):
    broken = RedisAuditLog(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        async with real_gateway(tmp_path, deps={"audit": broken}) as (core, runner):
            cid = await transferred(core, "billing")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{runner.url}/api/conversations/{cid}/context", headers=bearer("sam")) as resp:
                    assert resp.status == 503 and "Alice" not in await resp.text()
    finally:
        await broken.close()


async def test_guessed_tokens_are_throttled_the_honest_agent_elsewhere_gets_in(tmp_path):
    limits = {**WITH_ADMIN, "signin_failures_per_address": 5, "signin_failures_per_account": 8,
              "signin_account_pause_seconds": 1.0}
    async with real_gateway(tmp_path, agents=limits) as (core, runner):
        login = runner.url + "/agent/login"
        async with from_address("127.0.0.2") as guesser:
            for i in range(5):
                async with guesser.post(login, data={"token": f"alice.guess-{i:040d}"}) as resp:
                    assert resp.status == 403
            async with guesser.post(login, data={"token": "alice.guess-" + "9" * 40}) as resp:
                assert resp.status == 429 and 500 <= int(resp.headers["Retry-After"]) <= 601
            async with guesser.post(login, data={"token": AGENT_TOKENS["alice"]}) as resp:
                assert resp.status == 429  # closed even to a right guess: the guesser learns nothing
            async with guesser.get(f"{runner.url}/api/conversations/x/context",
                                   headers={"Authorization": "Bearer alice." + "0" * 40}) as resp:
                assert resp.status == 429  # the REST API is throttled the same way
        async with from_address("127.0.0.3", cookies=True) as honest:
            await sign_in(honest, runner.url, "alice")  # alice from elsewhere is not locked out
        async with from_address("127.0.0.4") as second:  # a second address: alice's account pauses
            for i in range(3):
                async with second.post(login, data={"token": f"alice.other-{i:040d}"}) as resp:
                    assert resp.status == 403
        async with from_address("127.0.0.5", cookies=True) as honest:
            async with honest.post(login, data={"token": AGENT_TOKENS["alice"]}) as resp:
                assert resp.status == 429 and int(resp.headers["Retry-After"]) <= 2
            await sign_in(honest, runner.url, "bob")  # other accounts are untouched
            await asyncio.sleep(1.1)
            await sign_in(honest, runner.url, "alice")  # and alice waited a second (a minute by default)
        refused = [e for e in await runner.parts.audit.entries() if e.action == "signin_refused"]
        assert len(refused) == 8 and {e.detail["address"] for e in refused} == {"127.0.0.2", "127.0.0.4"}
        assert runner.parts.metrics.value("voicegw_agent_signins_throttled_total", why="address") == 3
        assert runner.parts.metrics.value("voicegw_agent_signins_throttled_total", why="account") == 1


async def test_a_short_configured_token_refuses_the_start_and_is_not_repeated(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    settings = web_settings(tmp_path, agents={"accounts": {}, "tokens": {"tok-alice-9": "alice"}},
                            audiosocket={"enabled": False}, fastagi={"enabled": False},
                            twilio_media={"enabled": False})
    running = await start_gateway(settings)
    try:
        assert running.started == [] and len(running.failed) == 1
        assert "alice" in running.failed[0] and "at least 32" in running.failed[0]
    finally:
        await running.close()
    assert any("web did not start" in r.getMessage() for r in caplog.records)
    assert not any("tok-alice-9" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "agent-token").exists()  # no generated admin beside a refused configuration
    with pytest.raises(AccountError):
        async with real_gateway(tmp_path, agents={"tokens": {"tok-alice-9": "alice"}}):
            pass


async def test_tokens_stay_out_of_urls_and_the_log(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    legacy = "legacy-token-of-carol-0123456789abcdef"
    agents = {"accounts": {}, "tokens": {legacy: "carol"}}
    async with real_gateway(tmp_path / "legacy", agents=agents) as (core, runner):
        cid = await transferred(core, "support")
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            async with http.get(f"{runner.url}/agent?token={legacy}", allow_redirects=False) as resp:
                assert resp.status == 401 and "Set-Cookie" not in resp.headers and "Location" not in resp.headers
                assert "not accepted" in await resp.text()
            async with http.get(f"{runner.url}/agent/ws?token={legacy}") as resp:
                assert resp.status == 400
            async with http.post(f"{runner.url}/agent/login", data={"token": legacy}, allow_redirects=False) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/agent"
            async with http.get(f"{runner.url}/api/conversations/{cid}/context",
                                headers={"Authorization": f"Bearer {legacy}"}) as resp:
                assert resp.status == 200  # old plain tokens still work: an agent of every queue
            async with http.post(f"{runner.url}/agent/login", data={"token": legacy[:-1] + "X"}) as resp:
                assert resp.status == 403
    async with real_gateway(tmp_path / "default", agents={"accounts": {}}) as (core, runner):
        generated = (tmp_path / "default" / "agent-token").read_text()
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            async with http.post(f"{runner.url}/agent/login", data={"token": generated},
                                 allow_redirects=False) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/agent"
            async with http.post(f"{runner.url}/agent/login", data={"token": generated + "x"}) as resp:
                assert resp.status == 403
    secrets = [legacy, legacy[:-1] + "X", generated.split(".", 1)[1]]
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "agent-token" in logged and "carol" in logged
    assert not any(s in logged for s in secrets)


def test_voicegw_serve_logs_the_token_file_not_the_token(tmp_path):
    config = tmp_path / "site.yaml"
    port = free_port()
    config.write_text(f"data_dir: {tmp_path / 'data'}\nweb: {{port: {port}, public_url: 'http://127.0.0.1:{port}'}}\n"
                      "audiosocket: {enabled: false}\nfastagi: {enabled: false}\ntwilio_media: {enabled: false}\n"
                      "outreach: {enabled: false}\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(config), "serve"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        token_file = tmp_path / "data" / "agent-token"
        deadline = time.monotonic() + 60
        while not token_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        token = token_file.read_text()

        async def sign_in_and_read() -> None:
            async with aiohttp.ClientSession(cookie_jar=jar()) as http:
                for _ in range(100):
                    try:
                        async with http.post(f"http://127.0.0.1:{port}/agent/login", data={"token": token},
                                             allow_redirects=False) as resp:
                            assert resp.status == 303 and resp.headers["Location"] == "/agent"
                            return
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
                raise AssertionError("voicegw serve did not answer")

        asyncio.run(sign_in_and_read())
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0].decode()
    assert str(token_file) in output and "signed in" in output
    assert token.split(".", 1)[1] not in output and not re.search(r"token=\S", output)


async def test_rotating_or_removing_an_account_ends_its_sessions(tmp_path):
    accounts = AccountsFile(tmp_path / "agents.json")
    token = accounts.add("dana", Role.AGENT, frozenset({"support"}))
    async with real_gateway(tmp_path, agents={"accounts": {}}) as (core, runner):
        async with aiohttp.ClientSession(cookie_jar=jar()) as http:
            async with http.post(f"{runner.url}/agent/login", data={"token": token}) as resp:
                assert resp.status == 200
            ws = await http.ws_connect(f"{runner.url}/agent/ws")
            await recv_until(ws, "welcome")
            await recv_until(ws, "queue")  # the queue dana may take from, right after the welcome
            new = accounts.rotate("dana")
            await asyncio.sleep(2.2)  # the accounts file is looked at every 2 s
            async with http.get(f"{runner.url}/agent") as resp:
                assert resp.status == 401  # the old session is over
            await ws.send_json({"type": "ready", "skills": [], "languages": []})
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)  # and so is its socket
            async with http.post(f"{runner.url}/agent/login", data={"token": token}) as resp:
                assert resp.status == 403
            async with http.post(f"{runner.url}/agent/login", data={"token": new}) as resp:
                assert resp.status == 200
            accounts.remove("dana")
            await asyncio.sleep(2.2)
            async with http.get(f"{runner.url}/agent") as resp:
                assert resp.status == 401
