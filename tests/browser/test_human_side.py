"""The human side in a real browser through a real ``voicegw serve`` (its own process, a temp
config, the gateway's own SIP user agent), three pages at once:

- a customer's chat is transferred, waits in the queue (its place shown), an agent who signs in
  only afterwards is offered it and accepts; they chat both ways (typing shown), the agent sends
  a follow-up link, hands back to the bot at a chosen step, takes it again and closes it with a
  disposition;
- a supervisor sees every live conversation, watches one, sees the live transcript of a call the
  gateway's own softphone (``voicegw call``) places to it (the caller's words as recognized),
  and takes the call over for the agent.

Screenshots of the three pages land in the test's temp directory (``human-*.png``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import yaml
from playwright.async_api import expect

from gateway.agents.tokens import hash_token, new_token
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.digital.helpers import AGENT_ACCOUNTS, AGENT_TOKENS
from tests.sip.conftest import free_port as free_sip_port

pytestmark = [pytest.mark.browser, pytest.mark.sip, pytest.mark.slow, pytest.mark.timeout(420)]
ROOT = Path(__file__).resolve().parents[2]
WAIT_MS = 30_000
ROOT_TOKEN = new_token("root")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """``voicegw serve`` in its own process, on a config written to a temp directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.web_port, self.sip_port = free_port(), free_sip_port()
        accounts = {**AGENT_ACCOUNTS, "root": {"role": "admin", "token_hash": hash_token(ROOT_TOKEN)}}
        config = {
            "data_dir": str(tmp_path / "data"),
            "web": {"host": "127.0.0.1", "port": self.web_port, "public_url": f"http://127.0.0.1:{self.web_port}"},
            "audiosocket": {"enabled": False}, "fastagi": {"enabled": False},
            "sip": {"enabled": True, "host": "127.0.0.1", "port": self.sip_port, "workers": 0},
            "voice": {"asr": {"workers": 1}, "endpoint": {"no_input_seconds": 40}},
            "agents": {"accounts": accounts, "offer_seconds": 60, "dispatch_seconds": 0.3,
                       "reconnect_grace_seconds": 20},
            "outreach": {"enabled": False},
        }
        self.config = tmp_path / "site.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log_path = tmp_path / "serve.log"
        self._log = open(self.log_path, "wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(self.config), "serve"],
                                     cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while "voicegw is running" not in self.log():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log()[-4000:]
            time.sleep(0.3)
        self.url = f"http://127.0.0.1:{self.web_port}"

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def audit(self, conversation_id: str) -> list[dict[str, Any]]:
        request = urllib.request.Request(f"{self.url}/api/audit?conversation_id={conversation_id}&limit=200",
                                         headers={"Authorization": f"Bearer {ROOT_TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["entries"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """A chromium browser (three separate contexts: three people, three cookie jars)."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (make setup installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def page_for(browser: Any, viewport: dict[str, int]) -> Any:
    context = await browser.new_context(viewport=viewport)
    context.set_default_timeout(WAIT_MS)
    return await context.new_page()


async def sign_in(page: Any, url: str, name: str) -> None:
    await page.goto(url + "/agent")
    await page.fill("input[name=token]", AGENT_TOKENS[name])
    await page.click("#signin button[type=submit]")
    await expect(page.locator("#agent-id")).to_have_text(name)


async def chat(page: Any, text: str, expect_text: str) -> None:
    await page.fill("#text", text)
    await page.press("#text", "Enter")
    await expect(page.locator("#log")).to_contain_text(expect_text)


def caller_audio(tmp_path: Path) -> Path:
    from gateway.voice.audio import write_wav
    from tests.voice.speech_corpus import utterance

    said = utterance("I want to check the status of my order", lead_s=0.3, trail_s=0.3)
    path = tmp_path / "caller.wav"
    write_wav(path, said.pcm, said.rate)
    return path


async def test_three_pages_chat_and_call_through_voicegw_serve(tmp_path, chromium):
    serve = Serve(tmp_path)
    softphone = None
    try:
        url = serve.url
        customer = await page_for(chromium, {"width": 520, "height": 820})
        agent = await page_for(chromium, {"width": 1280, "height": 1000})
        supervisor = await page_for(chromium, {"width": 1400, "height": 900})

        await sign_in(supervisor, url, "sam")
        await supervisor.goto(url + "/supervisor")
        await expect(supervisor.locator("#me")).to_have_text("sam")

        # the customer asks for a person while no agent is signed in: the chat waits, told its place
        await customer.goto(url + "/chat")
        await expect(customer.locator("#log")).to_contain_text("How can I help you today?")
        await chat(customer, "I want to talk to an agent", "Connecting you with an agent")
        await expect(customer.locator("#queue-status")).to_contain_text("number 1 in the queue")
        await expect(customer.locator("#leave-message")).to_be_visible()
        cid = await customer.get_attribute("body", "data-conversation")
        row = supervisor.locator(f"#live tr[data-conversation='{cid}']")
        await expect(row).to_contain_text("waiting")

        # alice signs in after the transfer: she is offered it, and accepts
        await sign_in(agent, url, "alice")
        offer = agent.locator(f"article.pop[data-conversation='{cid}']")
        await expect(offer).to_contain_text("Offered to you")
        await expect(agent.locator("#queue-list")).to_contain_text("support")
        await agent.screenshot(path=str(tmp_path / "human-agent-offer.png"), full_page=True)
        await offer.locator("button.accept").click()
        held = agent.locator(f"article.conversation[data-conversation='{cid}']")
        await expect(held.locator(".transcript")).to_contain_text("I want to talk to an agent")
        await expect(customer.locator("#log")).to_contain_text("alice joined the conversation")

        # two-way chat: typing shows on both sides, messages arrive
        await held.locator(".composer input").press_sequentially("Hi, I'm Alice", delay=30)
        await expect(customer.locator("#typing")).to_contain_text("alice is typing")
        await held.locator(".composer input").press("Enter")
        await expect(customer.locator(".msg.agent")).to_contain_text("Hi, I'm Alice")
        await customer.locator("#text").press_sequentially("My parcel is late", delay=30)
        await expect(held.locator(".typing")).to_contain_text("customer is typing")
        await customer.press("#text", "Enter")
        await expect(held.locator(".transcript")).to_contain_text("My parcel is late")
        await expect(customer.locator(".msg.me.seen")).to_contain_text("My parcel is late")
        await expect(held.locator(".transcript p.agent.delivered")).to_contain_text("Hi, I'm Alice")
        await customer.screenshot(path=str(tmp_path / "human-customer-chat.png"))
        await agent.screenshot(path=str(tmp_path / "human-agent-chat.png"), full_page=True)

        # a follow-up link into the chat, then back to the bot at the chosen step
        await held.locator("select.purpose").select_option("track_order")
        await held.locator("button.follow-link").click()
        link = customer.locator(f"#log a[href^='{url}/l/']")
        await expect(link).to_have_count(1)
        await held.locator("select.journey").select_option("welcome")
        await held.locator("select.step").select_option("how_help")
        await held.locator("button.hand-back").click()
        await expect(customer.locator("#log")).to_contain_text("alice handed you back to our assistant")
        await expect(customer.locator("#log .msg.bot").last).to_contain_text("How can I help you today?")
        await expect(row).to_contain_text("welcome")

        # asked for again, taken again, closed with a disposition
        await chat(customer, "I want to talk to an agent", "Connecting you with an agent")
        offer = agent.locator(f"article.pop[data-conversation='{cid}']")
        await offer.locator("button.accept").click()
        held = agent.locator(f"article.conversation[data-conversation='{cid}']")
        await expect(held.locator(".transcript")).to_contain_text("handed back to the bot")
        await held.locator("select.disposition").select_option("resolved")
        await held.locator("input.notes").fill("tracking link sent, parcel late")
        await held.locator("button.close").click()
        await expect(customer.locator("#log")).to_contain_text("alice closed the conversation")
        await expect(customer.locator("#log")).to_contain_text("The conversation has ended")
        await customer.screenshot(path=str(tmp_path / "human-customer.png"))
        actions = [(e["actor"], e["action"]) for e in serve.audit(cid)]
        for expected in (("alice", "accepted"), ("alice", "follow_up"), ("alice", "handed_back"), ("alice", "closed")):
            assert expected in actions

        # a call through the gateway's own SIP user agent: the supervisor sees its live transcript
        wav = caller_audio(tmp_path)
        softphone = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "call", f"sip:bot@127.0.0.1:{serve.sip_port}", "--play", str(wav),
             "--quiet", "1.5", "--pause", "1.0", "--seconds", "90", "--json"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        voice_row = supervisor.locator("#live tr", has_text="voice").first
        await expect(voice_row).to_contain_text("order_status", timeout=120_000)
        voice_cid = await voice_row.get_attribute("data-conversation")
        await voice_row.click()
        transcript = supervisor.locator("#watch-transcript")
        await expect(transcript).to_contain_text("[voice] customer:")
        await expect(transcript).to_contain_text(re.compile("status of my order", re.I))
        await expect(transcript).to_contain_text("order number")
        await supervisor.locator("#take-agent").select_option("alice")
        await supervisor.locator("#take-over").click()
        await expect(supervisor.locator("#notice")).to_contain_text("Done: take over (alice)")
        await expect(transcript).to_contain_text("supervisor sam took it over for alice")  # arrives live
        await expect(transcript).to_contain_text("Let me connect you with an agent")
        voice_held = agent.locator(f"article.conversation[data-conversation='{voice_cid}']")
        await expect(voice_held).to_contain_text("voice")
        await expect(voice_held.locator(".transcript")).to_contain_text(re.compile("status of my order", re.I))
        for page, name in ((customer, "customer"), (agent, "agent"), (supervisor, "supervisor")):
            await page.screenshot(path=str(tmp_path / f"human-{name}.png"), full_page=True)
        log = serve.log()
        assert "actions carried out on its call here" in log  # the call heard the hand-over at once
        assert ("sam", "take_over") in [(e["actor"], e["action"]) for e in serve.audit(voice_cid)]
    finally:
        if softphone is not None and softphone.poll() is None:
            softphone.terminate()
            softphone.wait(timeout=30)
        serve.stop()
