"""The journeys' fixed prompts are synthesized before a caller reaches them, never during a call."""

from __future__ import annotations

import asyncio

from gateway.config import load_settings
from gateway.voice.prompt_warmup import fixed_prompts, warm_prompts
from gateway.voice.tts import Synthesizer


def test_fixed_prompts_are_the_journeys_voice_wording_without_slots():
    settings = load_settings()
    texts = fixed_prompts(settings.project_path(settings.journeys.directory))
    assert "Hello, thanks for calling. I'm the automated assistant." in texts
    assert any(t.startswith("How can I help you today?") for t in texts)
    assert not any("{" in t for t in texts) and len(texts) == len(set(texts))
    assert "Hi there!" not in texts  # chat wording is not spoken


async def test_warm_up_fills_the_cache_only_while_no_call_is_up(tmp_path):
    settings = load_settings(overrides={"data_dir": str(tmp_path)})
    tts = Synthesizer(settings.voice.tts, cache_dir=tmp_path / "cache")
    texts = ["Hello, thanks for calling. I'm the automated assistant.", "Is there anything else I can help you with?"]
    calls = [1]  # a call is up: nothing happens
    task = asyncio.ensure_future(warm_prompts(tts, texts, 8000, lambda: bool(calls)))
    await asyncio.sleep(0.3)
    assert not task.done() and tts.stats["synthesized"] == 0
    calls.clear()
    assert await asyncio.wait_for(task, 60) == 2
    synthesized = tts.stats["synthesized"]
    for text in texts:  # a caller reaching them now is served from the cache
        assert tts._lookup(text, 8000, "")
    await tts.synthesize(texts[0], 8000)
    assert tts.stats["synthesized"] == synthesized
    await tts.close()
