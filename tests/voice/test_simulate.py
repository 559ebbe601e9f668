"""A whole call through VoiceSession and the real conversation core, no network."""

from __future__ import annotations

import argparse
import json

import pytest

from gateway.config import load_settings
from gateway.core.events import UserSaid
from gateway.voice.pipeline import VoicePipeline
from gateway.voice.simulate import register, run_call, split_turns
from gateway.metrics import Metrics
from tests.voice.speech_corpus import concatenate, utterance
from tests.voice.test_session import Control, ScriptedAsr

RATE = 8000


def test_split_turns_at_long_silences():
    a = utterance("I want to pay my bill", snr_db=25, seed=1, lead_s=0.5, trail_s=0.3)
    b = utterance("yes", snr_db=25, seed=2, lead_s=0.3, trail_s=0.5)
    c = utterance("my package never arrived", snr_db=25, seed=3, lead_s=0.3, trail_s=0.5)
    pcm = concatenate([a, b, c], gap_s=1.5)
    pieces = split_turns(pcm, RATE)
    assert len(pieces) == 3
    assert b"".join(pieces) == pcm
    # short pauses inside a turn do not split it
    assert len(split_turns(concatenate([a, b], gap_s=0.3), RATE)) == 1
    assert split_turns(b"", RATE) == []


def test_cli_registers_simulate():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["simulate", "caller.wav", "--journey", "welcome", "--json", "--out", "r.wav"])
    assert args.journey == "welcome" and args.json and str(args.caller) == "caller.wav" and callable(args.func)


async def test_simulated_call_completes_the_agent_handoff_journey(tmp_path):
    from gateway.app import build_core
    from gateway.voice.tts import Synthesizer

    settings = load_settings(overrides={"data_dir": str(tmp_path)})
    core = await build_core(settings)
    tts = Synthesizer(settings.voice.tts, cache_dir=settings.data_path("prompt-cache"))
    asr = ScriptedAsr(["I would like to speak to an agent"])
    pipeline = VoicePipeline(settings, core, asr=asr, tts=tts)
    await pipeline.start()
    control = Control()
    session = pipeline.session(call_id="sim-1", sample_rate=RATE, caller_id="+15550199", control=control)
    await session.start()
    caller = utterance("I would like to speak to an agent", snr_db=20, seed=9, lead_s=0.5, trail_s=1.0)
    driver = await run_call(session, caller.pcm)
    assert session.ended.is_set(), session.transcript
    assert session.end_reason == "transferred"
    assert len(control.transfers) == 1
    conversation_id, transfer = control.transfers[0]
    assert conversation_id == session.conversation_id and transfer.queue
    speakers = [who for who, _ in session.transcript]
    assert speakers[0] == "bot" and "caller" in speakers
    assert any("agent" in text.lower() for who, text in session.transcript if who == "bot")
    assert len(asr.calls) == 1 and asr.calls[0][2].kind == "open"
    assert len(driver.bot_audio) > RATE * 2 * 3  # greeting, question and announcement were played
    ctx = await core.context(session.conversation_id)
    assert ctx
    await session.stop("transferred")
    await pipeline.close()
    await core.store.close()
    assert UserSaid


async def test_a_transfer_the_pbx_refuses_keeps_the_caller_then_ends_politely(tmp_path):
    """No agent reachable (the REFER refused): the caller hears so and is asked again; a second
    refusal ends the call with a goodbye instead of sending the caller round the loop forever."""
    from gateway.app import build_core
    from gateway.voice.tts import Synthesizer

    settings = load_settings(overrides={"data_dir": str(tmp_path)})
    core = await build_core(settings)
    tts = Synthesizer(settings.voice.tts, cache_dir=settings.data_path("prompt-cache"))
    asr = ScriptedAsr(["I would like to speak to an agent", "agent please"])
    pipeline = VoicePipeline(settings, core, asr=asr, tts=tts)
    await pipeline.start()
    control = Control(transfer_ok=False)
    session = pipeline.session(call_id="sim-2", sample_rate=RATE, caller_id="+15550198", control=control)
    await session.start()
    first = utterance("I would like to speak to an agent", snr_db=20, seed=9, lead_s=0.5, trail_s=1.0)
    second = utterance("agent please", snr_db=20, seed=10, lead_s=0.5, trail_s=1.0)
    try:
        await run_call(session, concatenate([first, second], gap_s=1.5))
        assert len(control.transfers) == 2, session.transcript
        bot = [text for who, text in session.transcript if who == "bot"]
        assert any("couldn't connect you" in text for text in bot), bot
        assert session.ended.is_set() and session.end_reason == "no agent reachable", session.transcript
        assert "Goodbye" in bot[-1]
        kinds = [e.kind for e in await core.store.events(session.conversation_id)]
        assert kinds.count("TransferFailed") == 2 and kinds.count("Transfer") == 2
        record = await core.store.get(session.conversation_id)
        assert record is not None and record.status == "closed" and record.state.transfer_failures == 2
    finally:
        await session.stop("completed")
        await pipeline.close()
        await core.close()


@pytest.fixture(scope="module")
def real_asr_settings(tmp_path_factory):
    return load_settings(overrides={"data_dir": str(tmp_path_factory.mktemp("sim"))})


@pytest.mark.slow
async def test_order_status_journey_with_real_engines_speech_and_dtmf(real_asr_settings):
    """Open speech (Whisper), the order number keyed in, yes/no answers (closed grammar), goodbye."""
    from gateway.app import build_core
    from gateway.voice.simulate import SimulatedControl
    from tests.voice.journey_calls import ask_about_an_order, said

    settings = real_asr_settings
    core = await build_core(settings)
    pipeline = VoicePipeline(settings, core)
    await pipeline.start()
    control = SimulatedControl()
    session = pipeline.session(call_id="sim-2", sample_rate=RATE, caller_id="+15550142", control=control)
    await session.start()
    driver = await ask_about_an_order(session)
    for key in "10001#":
        session.push_dtmf(key)
        await driver.tick()
    await driver.wait_for_bot(60)
    assert session.expect.kind == "yesno", session.transcript
    await driver.feed(said("no thank you", 12))
    await driver.wait_for_bot(60)
    await driver.feed(said("no thank you", 13))
    await driver.wait_for_bot(60)
    for _ in range(50 * 10):
        if session.ended.is_set():
            break
        await driver.tick()
    texts = [text for _, text in session.transcript]
    assert session.ended.is_set() and session.end_reason, "\n".join(texts)
    assert control.hangups, texts
    assert any("headphones" in t for t in texts), texts  # order 10001 was read out
    assert not any("still there" in t for t in texts), texts  # no no-input while the caller answered
    turns = session.stats["turns"]
    assert {t["kind"] for t in turns} == {"open", "dtmf", "closed"}
    assert [t["engine"] for t in turns if t["kind"] == "open"] == ["whisper"]
    # every turn's stage split: on /metrics, and in the event log without the words
    metrics = Metrics()
    pipeline.register_metrics(metrics)
    exposition = metrics.render()
    assert 'voicegw_turn_stage_seconds_count{kind="open",stage="total"} 1.0' in exposition, exposition
    assert 'voicegw_turn_stage_seconds_count{kind="closed",stage="asr_queue"}' in exposition, exposition
    assert "voicegw_voice_calls" in exposition
    logged = [e for e in await core.store.events(session.conversation_id) if e.kind == "TurnTiming"]
    assert [e.payload["kind"] for e in logged] == [t["kind"] for t in turns], logged
    for entry in logged:
        assert set(entry.payload["stages_ms"]) >= {"endpoint", "asr_queue", "recognition", "dialog", "tts", "total"}
        assert "text" not in entry.payload and "order" not in json.dumps(entry.payload)
    spoken = [e.payload["stages_ms"] for e in logged if e.payload["kind"] != "dtmf"]
    assert all(ms["total"] is not None and ms["total"] >= ms["endpoint"] for ms in spoken), spoken
    await session.stop()
    await pipeline.close()
    await core.store.close()


@pytest.mark.slow
def test_simulate_command_end_to_end(tmp_path):
    """``voicegw simulate caller.wav --json --out``: real core, Whisper, hibari, no network."""
    import subprocess
    import sys

    from gateway.config import PACKAGE_ROOT
    from gateway.voice.audio import read_wav, write_wav

    caller = tmp_path / "caller.wav"
    write_wav(caller, utterance("I would like to speak to an agent", snr_db=25, seed=21).pcm, RATE)
    out = tmp_path / "reply.wav"
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "simulate", str(caller), "--json", "--out", str(out),
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=240, cwd=PACKAGE_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    caller_lines = [t["text"] for t in report["transcript"] if t["speaker"] == "caller"]
    assert len(caller_lines) == 1 and "agent" in caller_lines[0].lower(), report
    assert report["end_reason"] == "transferred" and report["transfers"][0]["queue"]
    stages = report["turns"][0]["stages"]
    assert stages["total"] >= stages["endpoint"] > 0 and stages["asr_queue"] is not None, report["turns"]
    pcm, rate = read_wav(out)
    assert rate == RATE and len(pcm) / (2 * RATE) > 3.0
