"""SMS around the real core: local outbox, follow-up links by SMS to the phone on file, the signed
Twilio webhook, ``voicegw outbox``."""

from __future__ import annotations

import logging
import re

import aiohttp
from twilio.request_validator import RequestValidator

from gateway.cli import main as voicegw
from tests.digital.helpers import AGENT_TOKENS, ALICE, logged, real_gateway, sign_in, tracking_sms_by_voice

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
TWILIO = {"account_sid": "AC" + "0" * 32, "auth_token": AUTH_TOKEN, "from_number": "+15557654321"}


async def test_voice_followup_goes_to_outbox_and_link_completes(tmp_path, monkeypatch, capsys):
    async with real_gateway(tmp_path) as (core, runner):
        assert runner.parts.sms.transport == "outbox"
        cid = await tracking_sms_by_voice(core)  # the journey texts the tracking link to the phone on file
        messages = runner.parts.outbox.messages()
        assert len(messages) == 1 and messages[0].to == ALICE
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
            async with http.post(url, data={"seen": "yes"}) as resp:
                assert resp.status == 200
        assert [e.payload["fields"] for e in await logged(core, "FormSubmitted", cid)] == [{"seen": "yes"}]
    monkeypatch.setenv("VOICEGW_DATA_DIR", str(tmp_path))
    assert voicegw(["outbox", "--to", ALICE]) == 0
    out = capsys.readouterr().out
    assert f"-> {ALICE} [outbox/stored] " in out and url in out


async def test_local_reply_form_feeds_the_thread(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gateway.web.app")
    async with real_gateway(tmp_path, agents={"accounts": {}}) as (core, runner):
        # no accounts configured: an admin token is generated and kept in the data dir; the log
        # names the file, never the token
        path = tmp_path / "agent-token"
        token = path.read_text()
        assert token.startswith("admin.") and len(token) >= 32 and path.stat().st_mode & 0o777 == 0o600
        assert any(str(path) in r.getMessage() for r in caplog.records)
        assert not any(token.split(".")[1] in r.getMessage() for r in caplog.records)
        cid = await tracking_sms_by_voice(core)  # "Is there anything else I can help you with?"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(runner.url + "/outbox/reply", data={"from": ALICE, "body": "x"}) as resp:
                assert resp.status == 403  # not signed in
            async with http.post(f"{runner.url}/agent/login", data={"token": token}) as resp:
                assert resp.status == 200 and str(resp.url) == runner.url + "/agent"  # signed in (session cookie)
            async with http.post(runner.url + "/outbox/reply", data={"from": ALICE, "body": "no thanks"}) as resp:
                assert resp.status == 200  # after the redirect to /outbox
                assert "Have a great day!" in await resp.text()  # the journey's goodbye, in its text wording
            async with http.post(runner.url + "/outbox/reply", data={"from": "evil", "body": "x"}) as resp:
                assert resp.status == 400
        # the reply continued the conversation the SMS came from, on the SMS channel
        sms = await logged(core, "ChatMessage")
        assert [(e.conversation_id, e.channel, e.payload["text"]) for e in sms] == [(cid, "sms", "no thanks")]
        assert (await core.store.get(cid)).status == "closed"


async def test_twilio_webhook_signature_accepted_and_forged_refused(tmp_path, caplog):
    async with real_gateway(tmp_path, twilio=TWILIO) as (core, runner):
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
            assert await core.store.recent() == []  # nothing reached a conversation
            async with http.post(url, data=params, headers={"X-Twilio-Signature": good}) as resp:
                assert resp.status == 200
                assert resp.content_type == "application/xml"
                twiml = await resp.text()
            # the greeting of a new conversation, then the answer to what was texted
            assert "<Response><Message>Hi there! I'm the automated assistant.</Message>" in twiml
            assert "Try something like" in twiml
            # the same number's next message continues the same conversation; CALL asks for a call,
            # which the core refuses: it offered none to this thread
            call = dict(params, Body="CALL", MessageSid="SM" + "2" * 32)
            sig = RequestValidator(AUTH_TOKEN).compute_signature(url, call)
            async with http.post(url, data=call, headers={"X-Twilio-Signature": sig}) as resp:
                assert "no call offer to accept" in await resp.text()
        said = await logged(core, "ChatMessage") + await logged(core, "CallAccepted")
        assert len({e.conversation_id for e in said}) == 1
        assert [(e.channel, e.payload["number"]) for e in await logged(core, "CallAccepted")] == [
            ("sms", "+15550005555")]
        assert [e.payload["reason"] for e in await logged(core, "CallRefused")] == ["no_offer"]
        assert runner.parts.metrics.value("voicegw_sms_webhook_refused_total") == 3
        assert any("X-Twilio-Signature" in r.getMessage() for r in caplog.records)


async def test_oversized_webhook_refused_before_reading(tmp_path):
    async with real_gateway(tmp_path, twilio=TWILIO, web={"max_request_bytes": 10_000}) as (core, runner):
        async with aiohttp.ClientSession() as http:
            body = {"From": "+15550005555", "Body": "x" * 200_000}
            async with http.post(runner.url + "/sms/twilio", data=body, headers={"X-Twilio-Signature": "abc"}) as resp:
                assert resp.status == 413
        assert await core.store.recent() == []
