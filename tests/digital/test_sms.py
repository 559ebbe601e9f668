"""SMS: local outbox, follow-up links by SMS, the signed Twilio webhook, ``voicegw outbox``."""

from __future__ import annotations

import logging
import re

import aiohttp
from twilio.request_validator import RequestValidator

from gateway.cli import main as voicegw
from gateway.core.events import CallAccepted, ChatMessage, FormSubmitted
from tests.digital.fake_core import FakeCore
from tests.digital.helpers import AGENT_TOKENS, sign_in, start

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
TWILIO = {"account_sid": "AC" + "0" * 32, "auth_token": AUTH_TOKEN, "from_number": "+15557654321"}


async def test_voice_followup_goes_to_outbox_and_link_completes(tmp_path, monkeypatch, capsys):
    core = FakeCore()
    runner = await start(tmp_path, core)
    try:
        assert runner.parts.sms.transport == "outbox"
        opened = await core.open("voice", caller_id="+15550003333")
        cid = opened.conversation_id
        await core.handle(cid, ChatMessage(text="send me a link", channel="voice"))
        messages = runner.parts.outbox.messages()
        assert len(messages) == 1 and messages[0].to == "+15550003333"
        url = re.search(r"https?://\S+", messages[0].body).group(0)
        assert url.startswith(runner.url + "/l/")
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(runner.url + "/outbox") as resp:
                assert resp.status == 401  # the outbox shows every customer's SMS: supervisors and admins only
            async with http.get(runner.url + "/outbox?token=" + AGENT_TOKENS["sam"]) as resp:
                assert resp.status == 401  # never a token in a URL
            await sign_in(http, runner.url, "alice")
            async with http.get(runner.url + "/outbox") as resp:
                assert resp.status == 403  # an agent of two queues does not read everyone's messages
            await sign_in(http, runner.url, "sam")
            async with http.get(runner.url + "/outbox") as resp:
                page = await resp.text()
                assert resp.status == 200 and url in page
            assert [e.actor for e in await runner.parts.audit.entries() if e.action == "read_outbox"] == ["sam"]
            form = aiohttp.FormData()
            form.add_field("document", b"scan", filename="id.png")
            async with http.post(url, data=form) as resp:
                assert resp.status == 200
        assert any(isinstance(e, FormSubmitted) and c == cid for c, e in core.events)
    finally:
        await runner.close()
    monkeypatch.setenv("VOICEGW_DATA_DIR", str(tmp_path))
    assert voicegw(["outbox", "--to", "+15550003333"]) == 0
    out = capsys.readouterr().out
    assert "-> +15550003333 [outbox/stored] Upload your document: " + url in out


async def test_local_reply_form_feeds_the_thread(tmp_path, caplog):
    core = FakeCore()
    with caplog.at_level(logging.INFO, logger="gateway.web.app"):
        runner = await start(tmp_path, core, agents={"accounts": {}})
    try:
        # no accounts configured: an admin token is generated and kept in the data dir; the log
        # names the file, never the token
        path = tmp_path / "agent-token"
        token = path.read_text()
        assert token.startswith("admin.") and len(token) >= 32 and path.stat().st_mode & 0o777 == 0o600
        assert any(str(path) in r.getMessage() for r in caplog.records)
        assert not any(token.split(".")[1] in r.getMessage() for r in caplog.records)
        opened = await core.open("voice", caller_id="+15550004444")
        await core.handle(opened.conversation_id, ChatMessage(text="send me a link", channel="voice"))
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(runner.url + "/outbox/reply", data={"from": "+15550004444", "body": "x"}) as resp:
                assert resp.status == 403  # not signed in
            async with http.post(f"{runner.url}/agent/login", data={"token": token}) as resp:
                assert resp.status == 200 and str(resp.url) == runner.url + "/agent"  # signed in (session cookie)
            async with http.post(runner.url + "/outbox/reply", data={"from": "+15550004444", "body": "thanks!"}) as resp:
                assert resp.status == 200  # after the redirect to /outbox
                assert "You said: thanks!" in await resp.text()
            async with http.post(runner.url + "/outbox/reply", data={"from": "evil", "body": "x"}) as resp:
                assert resp.status == 400
        sms = [(c, e) for c, e in core.events if isinstance(e, ChatMessage) and e.channel == "sms"]
        assert sms == [(opened.conversation_id, ChatMessage(text="thanks!", channel="sms"))]
    finally:
        await runner.close()


async def test_twilio_webhook_signature_accepted_and_forged_refused(tmp_path, caplog):
    core = FakeCore()
    runner = await start(tmp_path, core, twilio=TWILIO)
    try:
        url = runner.url + "/sms/twilio"
        params = {"From": "+15550005555", "To": TWILIO["from_number"], "Body": "hello there",
                  "MessageSid": "SM" + "1" * 32, "AccountSid": TWILIO["account_sid"]}
        good = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
        forged = RequestValidator("not-the-token-0000000000000000").compute_signature(url, params)
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=params, headers={"X-Twilio-Signature": forged}) as resp:
                assert resp.status == 403
            async with http.post(url, data=params) as resp:
                assert resp.status == 403
            tampered = dict(params, Body="send me all the money")
            async with http.post(url, data=tampered, headers={"X-Twilio-Signature": good}) as resp:
                assert resp.status == 403
            assert not any(isinstance(e, ChatMessage) for _, e in core.events)
            async with http.post(url, data=params, headers={"X-Twilio-Signature": good}) as resp:
                assert resp.status == 200
                assert resp.content_type == "application/xml"
                twiml = await resp.text()
            assert "<Response><Message>Welcome.</Message>" in twiml and "You said: hello there" in twiml
            # the same number's next message continues the same conversation; CALL switches to a call
            call = dict(params, Body="CALL", MessageSid="SM" + "2" * 32)
            sig = RequestValidator(AUTH_TOKEN).compute_signature(url, call)
            async with http.post(url, data=call, headers={"X-Twilio-Signature": sig}) as resp:
                assert "Calling you now" in await resp.text()
        cids = {c for c, e in core.events if isinstance(e, (ChatMessage, CallAccepted))}
        assert len(cids) == 1
        assert [e for _, e in core.events if isinstance(e, CallAccepted)] == [
            CallAccepted(number="+15550005555", channel="sms")]
        assert runner.parts.metrics.value("voicegw_sms_webhook_refused_total") == 3
        assert any("X-Twilio-Signature" in r.getMessage() for r in caplog.records)
    finally:
        await runner.close()


async def test_oversized_webhook_refused_before_reading(tmp_path):
    core = FakeCore()
    runner = await start(tmp_path, core, twilio=TWILIO, web={"max_request_bytes": 10_000})
    try:
        async with aiohttp.ClientSession() as http:
            body = {"From": "+15550005555", "Body": "x" * 200_000}
            async with http.post(runner.url + "/sms/twilio", data=body, headers={"X-Twilio-Signature": "abc"}) as resp:
                assert resp.status == 413
        assert not core.events
    finally:
        await runner.close()
