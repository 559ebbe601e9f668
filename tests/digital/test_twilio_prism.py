"""The Twilio path against Prism serving Twilio's own OpenAPI description (tests/twilio_mock.py)."""

from __future__ import annotations

import pytest
from aiohttp import web

from gateway.config import load_settings
from gateway.digital.sms import SmsSender, SmsSendError
from tests.digital.helpers import ALICE, real_gateway, tracking_sms_by_voice
from tests.twilio_mock import prism

ACCOUNT = "AC" + "0" * 32
TWILIO = {"account_sid": ACCOUNT, "auth_token": "0123456789abcdef0123456789abcdef", "from_number": "+15557654321"}


def _message_resource(form: dict[str, str], sid: str) -> dict[str, object]:
    """A Message resource shaped as Twilio's description says (as Twilio answers a create)."""
    return {
        "account_sid": ACCOUNT, "api_version": "2010-04-01", "body": form.get("Body", ""),
        "date_created": "Wed, 25 Nov 2026 14:00:00 +0000", "date_sent": None,
        "date_updated": "Wed, 25 Nov 2026 14:00:00 +0000", "direction": "outbound-api",
        "error_code": None, "error_message": None, "from": form.get("From"), "messaging_service_sid": None,
        "num_media": "0", "num_segments": "1", "price": None, "price_unit": "USD", "sid": sid,
        "status": "queued", "subresource_uris": {"media": f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}/Media.json"},
        "to": form.get("To"), "uri": f"/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json",
    }


async def test_sms_through_prism_mock(tmp_path):
    async with prism("mock") as base_url:
        async with real_gateway(tmp_path, twilio={**TWILIO, "api_base_url": base_url}) as (core, runner):
            sms = runner.parts.sms
            assert sms.transport == "twilio"
            sid = await sms.send("+15550006666", "Your appointment is tomorrow at 10.", conversation_id="c1")
            assert sid.startswith("SM") and len(sid) == 34  # a Message resource as the description defines it
            record = runner.parts.outbox.messages()[0]
            assert (record.transport, record.provider_id, record.to) == ("twilio", sid, "+15550006666")
            # an account SID outside Twilio's pattern breaks the schema: Prism refuses (422), the
            # gateway raises SmsSendError and keeps the message in the outbox as failed
            bad = load_settings(environ={}, overrides={"data_dir": str(tmp_path), "twilio": {
                **TWILIO, "account_sid": "ACnot-a-valid-sid", "api_base_url": base_url}})
            with pytest.raises(SmsSendError, match="422"):
                await SmsSender(bad, runner.parts.outbox, runner.parts.metrics).send("+15550006666", "hi")
            assert runner.parts.outbox.messages()[0].status == "failed"
            assert runner.parts.metrics.value("voicegw_sms_failed_total") == 1


async def test_sms_through_prism_proxy_reaches_twilio_shaped_upstream(tmp_path):
    received: list[tuple[str, dict[str, str], str]] = []

    async def messages(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        received.append((request.path, form, request.headers.get("Authorization", "")))
        return web.json_response(_message_resource(form, "SM" + "a" * 32), status=201)

    upstream = web.Application()
    upstream.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", messages)
    up_runner = web.AppRunner(upstream)
    await up_runner.setup()
    site = web.TCPSite(up_runner, "127.0.0.1", 0)
    await site.start()
    up_port = site._server.sockets[0].getsockname()[1]
    try:
        async with prism("proxy", f"http://127.0.0.1:{up_port}") as base_url:
            async with real_gateway(tmp_path, twilio={**TWILIO, "api_base_url": base_url}) as (core, runner):
                cid = await tracking_sms_by_voice(core)  # the journey texts the link to the phone on file
                record = runner.parts.outbox.messages()[0]
                assert record.status == "queued" and record.provider_id == "SM" + "a" * 32
                assert record.conversation_id == cid
    finally:
        await up_runner.cleanup()
    assert len(received) == 1
    path, form, auth = received[0]
    assert path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
    assert form["To"] == ALICE and form["From"] == TWILIO["from_number"]
    assert "10001" in form["Body"] and " http://127.0.0.1:" in form["Body"] and "/l/" in form["Body"]
    assert auth.startswith("Basic ")
