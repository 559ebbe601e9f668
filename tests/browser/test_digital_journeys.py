"""The digital journeys in a real browser, through the real conversation core:

- a customer chats, gets verified, asks for a call; the call arrives over a real AudioSocket
  connection and continues the same conversation without asking to verify again;
- the agent desktop signs in by form (HttpOnly cookie, clean URL), shows the screen-pop on transfer
  (audited) and refuses a visitor without a token;
- a follow-up SMS link (from the local outbox) is opened and completes the upload step.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from gateway.app import build_core
from gateway.core.actions import Originate
from gateway.core.events import CallStarted, UserSaid
from gateway.telephony import audiosocket as asock
from gateway.telephony.audiosocket_server import AudioSocketServer
from gateway.telephony.calls import CallRecord, CallRegistry, audiosocket_uuid
from gateway.voice.pipeline import VoicePipeline
from gateway.voice.vad import VadPool
from tests.digital.helpers import AGENT_TOKENS, start, web_settings

pytestmark = pytest.mark.browser
WAIT_MS = 30_000


class SilentTts:
    """Stands in for speech synthesis: 200 ms of silence per prompt (the words are in the log)."""

    async def synthesize(self, text: str, sample_rate: int, prompt_id: str = "") -> bytes:
        return bytes(sample_rate // 5 * 2)


async def _real_core(tmp_path: Path, **overrides: Any) -> tuple[Any, Any]:
    settings = web_settings(tmp_path, **overrides)
    core = await build_core(settings)
    runner = await start(tmp_path, core, deps={"store": core.store, "crm": core.crm}, **overrides)
    return core, runner


async def _chat(page: Any, text: str, expect_text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")
    await expect(page.locator("#log")).to_contain_text(expect_text, timeout=WAIT_MS)


async def _verify_in_chat(page: Any, url: str) -> None:
    await page.goto(url + "/chat")
    await expect(page.locator("#log")).to_contain_text("How can I help you today?", timeout=WAIT_MS)
    await _chat(page, "I want to dispute my bill", "8-digit account number")
    await _chat(page, "12345678", "date of birth")
    assert await page.get_attribute("#text", "type") == "password"  # the secret is not shown
    await _chat(page, "1985-03-14", "you're verified")


async def _wait_for(predicate: Any, what: str, seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_chat_verified_then_call_arrives_over_audiosocket(tmp_path, browser):
    core, runner = await _real_core(tmp_path, voice={"vad": {"engine": "webrtc"}},
                                    audiosocket={"host": "127.0.0.1", "port": 0})
    settings = runner.parts.settings
    pipeline = VoicePipeline(settings, core, asr=object(), tts=SilentTts(), vad_pool=VadPool("webrtc", 2))
    await pipeline.start()
    calls = CallRegistry()
    server = await AudioSocketServer(settings, pipeline, calls=calls).start()
    placed: list[Originate] = []
    call_tasks: list[asyncio.Task[None]] = []

    async def asterisk_answers(cid: str, number: str) -> None:
        """What Asterisk does for an originated call: connect AudioSocket with the call's UUID."""
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(asock.encode_uuid(audiosocket_uuid(cid)))

        async def on_voice() -> bool:
            ctx = await core.context(cid)
            return "voice" in ctx["channels"] and any(
                line["channel"] == "bot" and "already verified" in line["text"] for line in ctx["transcript"])

        for _ in range(1500):  # 20 ms frames of silence until the voice greeting is logged
            writer.write(asock.encode_audio(bytes(320), 8000))
            await writer.drain()
            if await on_voice():
                break
            await asyncio.sleep(0.02)
        writer.write(asock.encode_hangup())
        await writer.drain()
        writer.close()

    async def originate_sink(cid: str, action: Any) -> None:
        placed.append(action)
        # what the voicegw-outbound dialplan does: the channel carries the core's callback nonce back
        calls.add(CallRecord(call_uuid=audiosocket_uuid(cid), conversation_id=cid, caller_id=action.number,
                             outbound=True, callback=action.callback))
        call_tasks.append(asyncio.create_task(asterisk_answers(cid, action.number)))

    core.register_sink(Originate, originate_sink)
    try:
        page = await browser.new_page()
        await _verify_in_chat(page, runner.url)
        cid = await page.get_attribute("body", "data-conversation")
        await _chat(page, "I was charged twice for the same month", "Shall I open a dispute")
        await page.get_by_role("button", name="yes").last.click()
        await expect(page.locator("#log")).to_contain_text("I've opened dispute case", timeout=WAIT_MS)
        await _chat(page, "can you call me please", "call you now")
        await page.click("#call-me")
        await expect(page.locator("#log")).to_contain_text("Calling you now", timeout=WAIT_MS)
        assert [(p.number, p.conversation_id) for p in placed] == [("+15551234567", cid)]
        await asyncio.wait_for(asyncio.gather(*call_tasks), 60)
        ctx = await core.context(cid)
        assert ctx["channels"][:2] == ["chat", "voice"] and "identity" in ctx["verified"]
        voice_lines = [line for line in ctx["transcript"] if line["channel"] in ("voice", "bot")]
        started = next(i for i, line in enumerate(ctx["transcript"])
                       if line["kind"] == "CallStarted" and line["channel"] == "voice")
        after = [line["text"] for line in ctx["transcript"][started:]]
        assert any("already verified" in text for text in after)
        assert not any("account number" in text for text in after)  # verification skipped
        assert voice_lines
    finally:
        await server.close()
        await pipeline.close()
        await runner.close()
        await core.store.close()


async def test_agent_desktop_shows_screen_pop_on_transfer(tmp_path, browser):
    core, runner = await _real_core(tmp_path)
    try:
        visitor = await browser.new_page()
        response = await visitor.goto(runner.url + "/agent")
        assert response.status == 401
        await expect(visitor.locator("#refusal")).to_contain_text("Sign in with your agent token")
        await visitor.fill("input[name=token]", "alice.wrong-token-0123456789abcdef0123456789")
        await visitor.click("button[type=submit]")
        await expect(visitor.locator("#refusal")).to_contain_text("not valid")
        assert await visitor.locator("#pops").count() == 0

        agent = await browser.new_page()
        await agent.goto(runner.url + "/agent")
        await agent.fill("input[name=token]", AGENT_TOKENS["alice"])
        await agent.click("#signin button[type=submit]")
        await expect(agent.locator("#agent-id")).to_have_text("alice", timeout=WAIT_MS)
        assert agent.url == runner.url + "/agent"  # a clean URL, the session in an HttpOnly cookie
        session = [c for c in await browser.cookies(runner.url) if c["name"] == "voicegw_agent"]
        assert len(session) == 1 and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
        assert await agent.evaluate("document.cookie") == ""  # the page's scripts cannot read it
        await expect(agent.locator("#role")).to_contain_text("billing")
        await agent.fill("#skills", "billing, disputes")
        await agent.fill("#languages", "en")
        await agent.click("#presence button[type=submit]")
        await expect(agent.locator("#presence-state")).to_contain_text("billing", timeout=WAIT_MS)

        customer = await browser.new_page()
        await _verify_in_chat(customer, runner.url)
        cid = await customer.get_attribute("body", "data-conversation")
        await _chat(customer, "I want to talk to an agent", "Connecting you with an agent")

        pop = agent.locator(f"article.pop[data-conversation='{cid}']")
        await expect(pop.locator(".customer-name")).to_have_text("Alice Martin", timeout=WAIT_MS)
        await expect(pop).to_contain_text("identity")
        await expect(pop).to_contain_text("billing_dispute")
        await expect(pop.locator(".next-steps")).to_contain_text("do not ask again")
        transcript = pop.locator(".transcript")
        await expect(transcript).to_contain_text("I want to dispute my bill")
        await expect(transcript).to_contain_text("[redacted]")
        assert "1985-03-14" not in await transcript.inner_text()
        assert runner.parts.metrics.value("voicegw_screenpops_total") == 1
        reads = [(e.actor, e.action, e.detail["via"]) for e in await runner.parts.audit.entries(conversation_id=cid)
                 if e.action == "read"]
        assert reads == [("alice", "read", "screen-pop")]

        await agent.click("#signout button[type=submit]")  # signing out returns to the form
        await expect(agent.locator("#refusal")).to_contain_text("Sign in with your agent token")
    finally:
        await runner.close()
        await core.store.close()


async def test_sms_link_opened_completes_upload_step(tmp_path, browser):
    core, runner = await _real_core(tmp_path)
    try:
        # a phone call (as the voice channel feeds it) reaches the loan journey's link step
        opened = await core.open("voice", caller_id="+15552223333", event=CallStarted(caller_id="+15552223333"))
        cid = opened.conversation_id
        # the caller ID names Carmen (a claim): she chooses the PIN check, then asks for the link
        for said in ("I want to continue my loan application", "PIN", "2468", "yes"):
            await core.handle(cid, UserSaid(text=said), session_id=opened.session_id)
        sms = runner.parts.outbox.messages(to="+15552223333")
        assert len(sms) == 1 and "personal loan" in sms[0].body

        page = await browser.new_page()
        await page.goto(runner.url + "/agent")  # the outbox is for supervisors: sam signs in first
        await page.fill("input[name=token]", AGENT_TOKENS["sam"])
        await page.click("#signin button[type=submit]")
        await expect(page.locator("#agent-id")).to_have_text("sam", timeout=WAIT_MS)
        await page.goto(runner.url + "/outbox")
        link = page.locator("#outbox a").first
        href = await link.get_attribute("href")
        assert href.startswith(runner.url + "/l/")
        await link.click()
        await expect(page.locator("h1")).to_have_text("Upload your document")
        await expect(page.locator("#greeting")).to_contain_text("Carmen Diaz")
        await expect(page.locator("#needed")).to_contain_text("proof of income")  # prefilled from the call
        document = tmp_path / "payslip.pdf"
        document.write_bytes(b"%PDF-1.4 proof of income")
        await page.set_input_files("input[name=document]", str(document))
        await page.fill("input[name=note]", "proof of income")
        await page.click("button[type=submit]")
        await expect(page.locator("#done")).to_contain_text("Received")

        ctx = await core.context(cid)
        assert "upload_document" in ctx["forms"] and "web" in ctx["channels"]
        assert any(line["kind"] == "FormSubmitted" for line in ctx["transcript"])
        stored = list((tmp_path / "uploads").rglob("*payslip.pdf"))
        assert len(stored) == 1 and stored[0].read_bytes() == b"%PDF-1.4 proof of income"

        response = await page.goto(href)  # the link works once
        assert response.status == 410
        await expect(page.locator("#refusal")).to_contain_text("already used")
    finally:
        await runner.close()
        await core.store.close()


async def test_embed_script_drops_the_chat_into_another_page(tmp_path, browser):
    core, runner = await _real_core(tmp_path)
    try:
        page = await browser.new_page()
        await page.set_content("<html><body><h1>A shop</h1>"
                               f"<script src=\"{runner.url}/chat/embed.js\"></script></body></html>")
        await page.click("#voicegw-chat-button")
        frame = page.frame_locator("#voicegw-chat-frame")
        await expect(frame.locator("#log")).to_contain_text("How can I help you today?", timeout=WAIT_MS)
        await frame.locator("#text").fill("where is my order")
        await frame.locator("#text").press("Enter")
        await expect(frame.locator("#log")).to_contain_text("order number", timeout=WAIT_MS)
    finally:
        await runner.close()
        await core.store.close()
