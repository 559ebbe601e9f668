"""SMS bodies in the outbox database: a record of what went through Twilio is redacted (the
customer's phone gets the real text); the local outbox, the simulated handset, keeps it.

Through the real conversation core and web app; "Twilio" is a local HTTP server shaped like
Twilio's Messages API, reached by the real ``twilio`` client (``twilio.api_base_url``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from gateway.app import build_core
from gateway.digital.outbox import OUTBOX_FILE
from tests.digital.helpers import sign_in, start, web_settings

ACCOUNT = "AC" + "0" * 32
AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
OUR_NUMBER = "+15557654321"
CODE_SMS = "Your verification code is 482913. It expires in 10 minutes."
CARD_SMS = "my card is 4111 1111 1111 1111, security code 737"


def _raw_outbox(data_dir: Path) -> bytes:
    """Every byte of the outbox database on disk (the WAL included)."""
    return b"".join(p.read_bytes() for p in data_dir.glob(OUTBOX_FILE + "*"))


async def _twilio_shaped_server(received: list[dict[str, str]]) -> tuple[web.AppRunner, str]:
    async def create_message(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        received.append(form)
        sid = "SM" + "b" * 32
        return web.json_response({
            "account_sid": ACCOUNT, "api_version": "2010-04-01", "body": form.get("Body", ""), "sid": sid,
            "status": "queued", "to": form.get("To"), "from": form.get("From"), "direction": "outbound-api",
            "num_segments": "1", "num_media": "0", "price": None, "price_unit": "USD", "error_code": None,
            "error_message": None, "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json",
        }, status=201)

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", create_message)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


async def test_twilio_records_are_redacted_and_the_customer_gets_the_real_text(tmp_path: Path) -> None:
    received: list[dict[str, str]] = []
    upstream, base_url = await _twilio_shaped_server(received)
    twilio = {"account_sid": ACCOUNT, "auth_token": AUTH_TOKEN, "from_number": OUR_NUMBER, "api_base_url": base_url}
    settings = web_settings(tmp_path, twilio=twilio)
    core = await build_core(settings)
    runner = await start(tmp_path, core, twilio=twilio, deps={"store": core.store, "crm": core.crm})
    try:
        sms = runner.parts.sms
        assert sms.transport == "twilio"
        opened = await core.open("sms", caller_id="+15550001111")
        await sms.send("+15550001111", CODE_SMS, conversation_id=opened.conversation_id)
        assert received[0]["Body"] == CODE_SMS  # what the phone gets is whole
        sent = runner.parts.outbox.messages()[0]
        assert (sent.transport, sent.body) == ("twilio", "Your verification code is [pin]. It expires in 10 minutes.")
        # the customer answers by SMS through Twilio's signed webhook, to the real core
        url = runner.url + "/sms/twilio"
        params = {"From": "+15550001111", "To": OUR_NUMBER, "Body": CARD_SMS,
                  "MessageSid": "SM" + "1" * 32, "AccountSid": ACCOUNT}
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=params,
                                 headers={"X-Twilio-Signature": signature}) as resp:
                assert resp.status == 200, await resp.text()
        inbound = [m for m in runner.parts.outbox.messages() if m.direction == "in"]
        assert [m.body for m in inbound] == ["my card is [card ****1111], security code [pin]"]
        assert any(m.transport == "twiml" for m in runner.parts.outbox.messages())  # the replies, recorded
        raw = _raw_outbox(tmp_path)
        assert b"[card ****1111]" in raw
        for secret in (b"482913", b"4111 1111 1111 1111", b"code 737"):
            assert secret not in raw, secret
        events = await core.store.events(inbound[0].conversation_id)
        said: list[Any] = [e.payload.get("text") for e in events if e.kind == "ChatMessage"]
        assert said == ["my card is [card ****1111], security code [pin]"]
    finally:
        await runner.close()
        await upstream.cleanup()


async def test_the_local_outbox_keeps_the_body_it_is_the_simulated_handset(tmp_path: Path) -> None:
    settings = web_settings(tmp_path)
    core = await build_core(settings)
    runner = await start(tmp_path, core, deps={"store": core.store, "crm": core.crm})
    try:
        assert runner.parts.sms.transport == "outbox"
        opened = await core.open("sms", caller_id="+15550002222")
        await runner.parts.sms.send("+15550002222", CODE_SMS, conversation_id=opened.conversation_id)
        assert runner.parts.outbox.messages()[0].body == CODE_SMS  # the "phone" shows the code
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await sign_in(http, runner.url, "sam")  # the outbox is for supervisors
            async with http.post(runner.url + "/outbox/reply", data={"from": "+15550002222", "body": CARD_SMS},
                                 allow_redirects=False) as resp:
                assert resp.status == 303, await resp.text()
        inbound = [m for m in runner.parts.outbox.messages() if m.direction == "in"]
        assert [m.body for m in inbound] == [CARD_SMS]  # typed on the simulated handset, shown as typed
        events = await core.store.events(inbound[0].conversation_id)
        said = [e.payload.get("text") for e in events if e.kind == "ChatMessage"]
        assert said == ["my card is [card ****1111], security code [pin]"]  # the conversation log is redacted
    finally:
        await runner.close()
