"""Rasa compatibility over real sockets: the client against the gateway's own action server and
against a real rasa-sdk action server in a subprocess; errors and timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path
from typing import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from gateway.config import PACKAGE_ROOT, load_settings
from gateway.integrations.rasa import RasaActionClient, RasaError, webhook_url
from gateway.integrations.rasa_actions import ActionHooks, ActionServer, start_action_server
from gateway.integrations.sample_crm import SampleCrm
from tests.redis_server import free_port


@pytest.fixture
async def crm(tmp_path: Path) -> AsyncIterator[SampleCrm]:
    crm = SampleCrm(tmp_path / "crm.db")
    yield crm
    await crm.close()


async def _serve(tmp_path: Path, crm: SampleCrm, hooks: ActionHooks | None = None) -> ActionServer:
    settings = load_settings(overrides={"data_dir": str(tmp_path), "journeys": {"agent_queue": "front-desk"}})
    return await start_action_server(settings, crm, "127.0.0.1", 0, hooks=hooks)


async def test_gateway_actions_through_the_webhook_protocol(tmp_path: Path, crm: SampleCrm) -> None:
    follow_ups: list[tuple[str, ...]] = []
    transfers: list[tuple[str, ...]] = []

    async def follow_up(sender: str, channel: str, template: str, customer: str) -> None:
        follow_ups.append((sender, channel, template, customer))

    async def transfer(sender: str, queue: str, reason: str) -> None:
        transfers.append((sender, queue, reason))

    server = await _serve(tmp_path, crm, ActionHooks(follow_up=follow_up, transfer=transfer))
    client = RasaActionClient(f"http://127.0.0.1:{server.port}", timeout=10)
    try:
        result = await client.run("action_verify_identity", sender_id="conv-1",
                                  slots={"account_number": "12345678", "pin": "4321"},
                                  latest_message={"text": "four three two one"})
        assert result.slots() == {"pin": None, "verified": True, "customer_id": "C001",
                                  "customer_name": "Alice Martin", "outcome": "verified"}
        bad = await client.run("action_verify_identity", sender_id="conv-1",
                               slots={"account_number": "12345678", "date_of_birth": "1985-03-15"},
                               latest_message={})
        assert bad.slots()["outcome"] == "failed" and bad.texts() == ["Sorry, those details don't match our records."]

        order = await client.run("action_order_status", sender_id="conv-1", slots={"customer_id": "C001"},
                                 latest_message={"text": "where is my order"})
        assert order.slots()["order_id"] == "10001" and order.slots()["order_status"] == "shipped"
        assert order.texts()[0].startswith("Order 10001 (noise-cancelling headphones) is shipped, expected on ")
        other = await client.run("action_order_status", sender_id="conv-1",
                                 slots={"customer_id": "C001", "order_id": "20001"}, latest_message={})
        assert other.slots() == {"outcome": "not_found"}  # Bob's order is not shown to Alice

        dispute = await client.run("action_open_dispute", sender_id="conv-1",
                                   slots={"customer_id": "C001", "dispute_reason": "charged twice"}, latest_message={})
        case = dispute.slots()["case_number"]
        assert dispute.slots()["invoice_id"] == "INV-1002" and case.isdigit()
        assert (await crm.invoices("C001"))[0].disputed

        sent = await client.run("action_send_follow_up", sender_id="conv-1",
                                slots={"customer_id": "C001", "follow_up_template": "dispute_opened"}, latest_message={})
        assert follow_ups == [("conv-1", "sms", "dispute_opened", "C001")]
        assert sent.responses[0]["custom"] == {"gateway_action": "send_follow_up", "channel": "sms",
                                               "template": "dispute_opened", "customer_id": "C001"}

        handoff = await client.run("action_transfer_to_agent", sender_id="conv-1", slots={}, latest_message={})
        assert transfers == [("conv-1", "front-desk", "customer asked for an agent")]
        assert handoff.slots() == {"handoff_queue": "front-desk", "outcome": "transfer"}

        known = await client.run("action_lookup_customer", sender_id="+1 555 987 6543", slots={}, latest_message={})
        assert known.slots()["customer_name"] == "Bob Nguyen"

        with pytest.raises(RasaError, match=r"HTTP 404.*action_does_not_exist"):
            await client.run("action_does_not_exist", sender_id="conv-1", slots={}, latest_message={})
        assert await client.health()
    finally:
        await client.close()
        await server.close()


async def test_a_slow_crm_makes_the_action_apologize(tmp_path: Path) -> None:
    slow = SampleCrm(tmp_path / "crm.db", timeout_seconds=0.2, delay_seconds=5)
    server = await _serve(tmp_path, slow)
    client = RasaActionClient(f"http://127.0.0.1:{server.port}/webhook", timeout=20)
    try:
        result = await client.run("action_order_status", sender_id="c", slots={"order_id": "10001"}, latest_message={})
        assert result.slots() == {"outcome": "error"}
        assert result.texts() == ["I'm sorry, I can't reach our systems right now."]
    finally:
        await client.close()
        await server.close()
        await slow.close()


async def test_the_action_server_speaks_like_rasa_sdk(tmp_path: Path, crm: SampleCrm) -> None:
    server = await _serve(tmp_path, crm)
    base = f"http://127.0.0.1:{server.port}"
    call = {"next_action": "action_lookup_customer", "sender_id": "+15551234567",
            "tracker": {"sender_id": "+15551234567", "slots": {}, "latest_message": {}, "events": []},
            "domain": {}, "version": "3.8.0"}
    try:
        async with aiohttp.ClientSession() as http:
            # Rasa compresses its requests with deflate
            async with http.post(f"{base}/webhook", data=zlib.compress(json.dumps(call).encode()),
                                 headers={"Content-Encoding": "deflate", "Content-Type": "application/json"}) as resp:
                assert resp.status == 200
                body = await resp.json()
                assert {"event": "slot", "timestamp": None, "name": "customer_id", "value": "C001"} in body["events"]
            no_domain = {k: v for k, v in call.items() if k != "domain"}
            async with http.post(f"{base}/webhook", json=no_domain) as resp:
                assert resp.status == 449  # rasa-sdk's "resend with the domain"
            async with http.post(f"{base}/webhook", data=b"{not json") as resp:
                assert resp.status == 400
            async with http.get(f"{base}/actions") as resp:
                names = {a["name"] for a in await resp.json()}
            assert {"action_order_status", "action_verify_identity", "action_open_dispute",
                    "action_send_follow_up", "action_transfer_to_agent", "action_lookup_customer"} <= names
            async with http.get(f"{base}/health") as resp:
                assert await resp.json() == {"status": "ok"}
    finally:
        await server.close()


@contextlib.contextmanager
def run_rasa_sdk(actions: str, log_dir: Path, env_extra: dict[str, str] | None = None) -> Iterator[str]:
    """A real rasa-sdk action server (``python -m rasa_sdk``) loading ``actions``; yields its URL."""
    port = free_port()
    log_path = log_dir / "rasa_sdk.log"
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT), **(env_extra or {}))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rasa_sdk", "--actions", actions, "--port", str(port)],
            cwd=PACKAGE_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"rasa_sdk exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"rasa_sdk did not answer /health: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own process group: sanic may have spawned workers
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def rasa_sdk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """rasa-sdk's own server with a team's own actions (tests/integrations/rasa_sdk_actions.py)."""
    with run_rasa_sdk("tests.integrations.rasa_sdk_actions", tmp_path_factory.mktemp("rasa")) as url:
        yield url


async def test_client_against_a_real_rasa_sdk_server(rasa_sdk_server: str) -> None:
    client = RasaActionClient(rasa_sdk_server, timeout=20)
    try:
        result = await client.run(
            "action_greet_customer", sender_id="conv-42", slots={"customer_name": "Alice"},
            latest_message={"text": "hi there", "intent": {"name": "greet", "confidence": 0.98}},
        )
        assert result.texts() == ["Hello Alice, you said: hi there"]
        assert result.slots() == {"greeted": True, "seen_intent": "greet", "sender": "conv-42", "outcome": "greeted"}
        with pytest.raises(RasaError, match=r"HTTP 404.*No registered action found for name 'action_nope'"):
            await client.run("action_nope", sender_id="conv-42", slots={}, latest_message={})
        with pytest.raises(RasaError, match=r"HTTP 500.*broken on purpose"):
            await client.run("action_always_broken", sender_id="conv-42", slots={}, latest_message={})
    finally:
        await client.close()


async def test_timeouts_and_unreachable_servers_give_rasa_error() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = RasaActionClient(f"http://127.0.0.1:{port}", timeout=0.5)
    try:
        with pytest.raises(RasaError, match=r"did not answer within 0.5 s"):
            await client.run("action_x", sender_id="c", slots={}, latest_message={})
    finally:
        await client.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()

    nowhere = RasaActionClient(f"http://127.0.0.1:{free_port()}/webhook", timeout=5)
    try:
        with pytest.raises(RasaError, match="unreachable"):
            await nowhere.run("action_x", sender_id="c", slots={}, latest_message={})
        assert not await nowhere.health()
    finally:
        await nowhere.close()


async def test_a_server_answering_garbage_gives_rasa_error() -> None:
    async def garbage(_: web.Request) -> web.Response:
        return web.Response(text="<html>proxy error</html>", status=502)

    async def odd(_: web.Request) -> web.Response:
        return web.json_response({"events": "not a list"})

    app = web.Application()
    app.router.add_post("/webhook", garbage)
    app.router.add_post("/odd/webhook", odd)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        client = RasaActionClient(f"http://127.0.0.1:{port}", timeout=5)
        with pytest.raises(RasaError, match="HTTP 502 with a body that is not JSON"):
            await client.run("action_x", sender_id="c", slots={}, latest_message={})
        await client.close()
        client = RasaActionClient(f"http://127.0.0.1:{port}/odd/webhook/", timeout=5)
        with pytest.raises(RasaError, match="unexpected shape"):
            await client.run("action_x", sender_id="c", slots={}, latest_message={})
        await client.close()
    finally:
        await runner.cleanup()
    with pytest.raises(RasaError, match="not an http"):
        webhook_url("localhost:5055")


async def test_gateway_actions_load_into_rasa_sdks_own_server(tmp_path: Path) -> None:
    env = {"VOICEGW_DATA_DIR": str(tmp_path / "data")}
    with run_rasa_sdk("gateway.integrations.rasa_actions", tmp_path, env) as url:
        client = RasaActionClient(url, timeout=20)
        try:
            result = await client.run("action_verify_identity", sender_id="conv-7",
                                      slots={"account_number": "87654321", "date_of_birth": "1990-07-02"},
                                      latest_message={"text": "july second ninety"})
            assert result.slots()["customer_name"] == "Bob Nguyen" and result.slots()["outcome"] == "verified"
            order = await client.run("action_order_status", sender_id="conv-7", slots={"order_id": "20001"},
                                     latest_message={})
            assert order.slots()["order_status"] == "delayed"
        finally:
            await client.close()
    assert (tmp_path / "data" / "crm.db").exists()  # the CRM the gateway's settings name
