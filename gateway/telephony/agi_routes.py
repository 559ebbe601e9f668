"""The gateway's FastAGI routes: ``voicebot`` (audio to AudioSocket) and ``fallback`` (DTMF).

``voicebot`` (``AGI(agi://gateway:4573/voicebot)``): answers, registers the call (channel,
caller id, dialed number, and the conversation id when the channel already carries
``VOICEGW_CONVERSATION``, as an originated callback does; the script's query may carry
``callback=${VOICEGW_CALLBACK}``, the core's nonce for a call it placed, and
``attestation=``, a STIR/SHAKEN level the PBX verified: see docs/trust.md) and hands the call's audio to the
gateway with ``EXEC AudioSocket <uuid>,<fastagi.audiosocket_address>``. The voice session opens
or resumes the conversation by caller id. When ``AudioSocket()`` returns, the route tags the
channel with ``VOICEGW_CONVERSATION`` and, when the journey chose an agent and AMI did not
already redirect the call, sets ``VOICEGW_TRANSFER=1``, ``VOICEGW_QUEUE``, ``VOICEGW_SKILLS``
and ``VOICEGW_LANGUAGE`` for the dialplan. ``VOICEGW_STATUS`` says how it ended, truthfully:
``transfer`` (the dialplan takes the call to ``VOICEGW_QUEUE``), ``transferred`` (AMI already
redirected it: Asterisk then ends ``AudioSocket()`` with -1 and a ``HANGUP`` line, yet the
channel is alive and takes variables, as recorded in ``agi_g_voicebot_redirected_by_ami``),
``busy`` (the AudioSocket server was at ``audiosocket.max_sessions``), ``error`` with
``VOICEGW_REASON`` (the gateway failed during the call), ``completed`` or ``hangup``; the shipped
dialplan sends every status but ``completed`` and ``hangup`` to the agents. If the PBX has no
AudioSocket application (``EXEC`` answers -2) or ``AudioSocket()`` cannot reach the gateway
(-1 before any audio), the call continues on the DTMF route.

``fallback`` (``AGI(agi://gateway:4573/fallback)``): the same journeys for PBXs without
AudioSocket. Prompts are synthesized by the gateway's Synthesizer into 8 kHz 16-bit WAV files
in ``fastagi.prompts_dir`` (Asterisk must be able to read it, at ``asterisk_prompts_dir`` when
mounted elsewhere) and played with ``STREAM FILE`` (Say) or ``GET DATA`` (Ask). Answers are
keyed: digits go to the core as ``DtmfPressed`` events (1 = yes, 2 = no, 1..n = menu options,
0 = an agent on open questions); no input is a ``Silence`` event. A key pressed during any
prompt, or while the gateway works between prompts, reaches the conversation in order
(type-ahead, :mod:`gateway.telephony.keypad`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

from agi.server import AgiError, AgiSession, ChannelHungUp
from gateway.config import Settings
from gateway.core.actions import Action, Ask, Hangup, Say, Transfer
from gateway.core.events import CallStarted, ChannelClosed, DtmfPressed, Event, RecognitionFailed, Silence
from gateway.telephony import keypad
from gateway.telephony.asterisk_queues import queue_extension
from gateway.telephony.calls import FAILED_ENDS, CallRecord, CallRegistry, audiosocket_uuid
from gateway.telephony.keypad import TypeAhead
from gateway.voice.audio import write_wav

log = logging.getLogger(__name__)

PROMPT_RATE = 8000
"""Asterisk's ``.wav`` format reads 8 kHz 16-bit mono everywhere."""
MAX_TURNS = 200
"""A fallback call longer than this many exchanges is ended (a loop guard)."""
MAX_CALL_SECONDS = 4 * 3600.0
"""``EXEC AudioSocket`` answers when the call leaves AudioSocket(); a peer silent longer is gone."""
FALLBACK_PROMPT = "beep"
"""A stock Asterisk sound played when a prompt cannot be synthesized."""


async def set_transfer_variables(agi: AgiSession, conversation_id: str, transfer: Transfer) -> None:
    """Hand a transfer to the dialplan (see ``dialplans/asterisk/extensions_voicegw.conf``)."""
    await agi.set_variable("VOICEGW_CONVERSATION", conversation_id)
    await agi.set_variable("VOICEGW_QUEUE", queue_extension(transfer.queue))
    await agi.set_variable("VOICEGW_SKILLS", ",".join(transfer.skills))
    await agi.set_variable("VOICEGW_LANGUAGE", transfer.language)
    await agi.set_variable("VOICEGW_TRANSFER", "1")


class VoicebotRoute:
    """``agi://gateway/voicebot``: answer, register, AudioSocket, then hand back to the dialplan."""

    def __init__(self, settings: Settings, calls: CallRegistry, fallback: "FallbackRoute | None" = None,
                 *, audiosocket_address: str = ""):
        self.settings = settings
        self.calls = calls
        self.fallback = fallback
        self.audiosocket_address = audiosocket_address or settings.fastagi.audiosocket_address

    async def __call__(self, agi: AgiSession) -> None:
        env = agi.env
        await agi.answer()
        conversation_id = await agi.get_variable("VOICEGW_CONVERSATION") or ""
        outbound = env.query.get("outbound", "") in ("1", "yes", "true") or bool(
            await agi.get_variable("VOICEGW_OUTBOUND"))
        callback, attestation = env.query.get("callback", ""), env.query.get("attestation", "")
        call_uuid = audiosocket_uuid(conversation_id)
        record = self.calls.add(CallRecord(
            call_uuid=call_uuid, conversation_id=conversation_id, channel=env.channel,
            caller_id=env.caller_id, dialed=env.dialed, uniqueid=env.uniqueid, outbound=outbound,
            callback=callback, attestation=attestation))
        status = "hangup"
        try:
            await agi.set_variable("VOICEGW_CALL", call_uuid)
            result = await agi.exec("AudioSocket", f"{call_uuid},{self.audiosocket_address}",
                                  timeout=MAX_CALL_SECONDS)
            if result.value == -2:
                log.error("FastAGI %s: Asterisk has no AudioSocket application (load app_audiosocket.so); "
                          "continuing on the DTMF route", env.channel)
                self.calls.discard(call_uuid)
                if self.fallback is not None:
                    await self.fallback(agi, answered=True)
                return
            if result.value != 0 and not record.connected and not agi.hangup_seen and self.fallback is not None:
                log.error("FastAGI %s: AudioSocket did not reach the gateway at %s; continuing on the DTMF route",
                          env.channel, self.audiosocket_address)
                self.calls.discard(call_uuid)
                await self.fallback(agi, answered=True)
                return
            status = "completed" if result.value == 0 else "hangup"
            if record.redirected:
                status = "transferred"  # AMI moved the channel; it ends AudioSocket() with -1
                await agi.set_variable("VOICEGW_CONVERSATION", record.conversation_id)
            elif record.transfer is not None:
                await set_transfer_variables(agi, record.conversation_id, record.transfer)
                status = "transfer"
            elif record.end_reason in FAILED_ENDS:
                status = "busy" if record.end_reason == "busy" else "error"
                await agi.set_variable("VOICEGW_REASON", f"gateway-{record.end_reason}")
                if record.conversation_id:
                    await agi.set_variable("VOICEGW_CONVERSATION", record.conversation_id)
            elif record.conversation_id:
                await agi.set_variable("VOICEGW_CONVERSATION", record.conversation_id)
            await agi.set_variable("VOICEGW_STATUS", status)
        except ChannelHungUp:
            log.info("FastAGI %s: call left the voicebot route (%s)", env.channel, status)
        finally:
            self.calls.discard(call_uuid)


class PromptFiles:
    """Synthesized prompts as WAV files Asterisk can play, cached by text and voice."""

    def __init__(self, settings: Settings, synthesizer: Any):
        cfg = settings.fastagi
        self.directory = settings.data_path(cfg.prompts_dir)
        self.asterisk_directory = Path(cfg.asterisk_prompts_dir) if cfg.asterisk_prompts_dir else self.directory
        self.synthesizer = synthesizer
        tts = settings.voice.tts
        self._voice = f"{tts.engine}/{tts.voice}/{tts.speed}"

    async def path(self, text: str, prompt_id: str = "") -> str:
        """The sound name to give STREAM FILE / GET DATA (no extension), or the stock beep."""
        if self.synthesizer is None or not text.strip():
            return FALLBACK_PROMPT
        digest = hashlib.sha1(f"{self._voice}|{prompt_id}|{text}".encode("utf-8")).hexdigest()[:20]
        name = f"vg-{digest}"
        target = self.directory / f"{name}.wav"
        if not target.exists():
            try:
                pcm = await self.synthesizer.synthesize(text, PROMPT_RATE, prompt_id)
            except Exception as exc:  # a prompt that cannot be made must not end the call
                log.warning("DTMF route: cannot synthesize prompt %r: %s; playing %s", text[:40], exc, FALLBACK_PROMPT)
                return FALLBACK_PROMPT
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            await asyncio.to_thread(write_wav, tmp, pcm, PROMPT_RATE)
            tmp.replace(target)
        return str(self.asterisk_directory / name)


class FallbackRoute:
    """``agi://gateway/fallback``: the journeys driven by prompts and keyed answers."""

    def __init__(self, settings: Settings, core: Any, prompts: PromptFiles):
        self.settings = settings
        self.core = core
        self.prompts = prompts

    async def __call__(self, agi: AgiSession, *, answered: bool = False) -> None:
        env = agi.env
        if not answered:
            await agi.answer()
        known = await agi.get_variable("VOICEGW_CONVERSATION") or ""
        outbound = env.query.get("outbound", "") in ("1", "yes", "true")
        event = CallStarted(caller_id=env.caller_id, dialed=env.dialed, channel="voice",
                            call_id=env.uniqueid, outbound=outbound)
        opened = await self.core.open("voice", caller_id=env.caller_id, conversation_id=known,
                                      journey=env.query.get("journey", ""), event=event,
                                      callback=env.query.get("callback", ""),
                                      attestation=env.query.get("attestation", ""))
        conversation_id = opened.conversation_id
        session = opened.session_id
        reason = "hangup"
        try:
            await agi.set_variable("VOICEGW_CONVERSATION", conversation_id)
            reason = await self._converse(agi, conversation_id, session, opened.actions)
            await agi.set_variable("VOICEGW_STATUS", reason)
        except ChannelHungUp:
            log.info("FastAGI %s: caller hung up (conversation %s)", env.channel, conversation_id)
        finally:
            await self.core.handle(conversation_id, ChannelClosed(reason=reason, channel="voice"), session_id=session)

    async def _converse(self, agi: AgiSession, conversation_id: str, session: str, actions: list[Action]) -> str:
        typed = TypeAhead()
        for _ in range(MAX_TURNS):
            ask: Ask | None = None
            for action in actions:
                if isinstance(action, Say):
                    if typed and action.barge_in:
                        continue  # the caller is already answering: the rest of this turn is not played
                    prompt = await keypad.listening(agi, self.prompts.path(action.text, action.prompt_id), typed)
                    await self._play(agi, prompt, action.barge_in, typed)
                elif isinstance(action, Ask):
                    ask = action
                elif isinstance(action, Transfer):
                    await set_transfer_variables(agi, conversation_id, action)
                    return "transfer"
                elif isinstance(action, Hangup):
                    try:
                        await agi.hangup()
                    except AgiError:
                        pass
                    return "completed"
            if ask is not None:
                actions = await self._answer(agi, conversation_id, session, ask, typed)
            elif typed:
                actions = await self.digits_to_core(conversation_id, session, typed.take(), typed, agi)
            else:
                return "completed"
        log.warning("FastAGI %s: conversation %s passed %d turns; ending", agi.env.channel, conversation_id, MAX_TURNS)
        return "completed"

    async def _play(self, agi: AgiSession, prompt: str, barge_in: bool, typed: TypeAhead) -> None:
        """STREAM FILE keeping every key; -1 is a hangup or a file Asterisk cannot read (told
        apart by CHANNEL STATUS)."""
        if await keypad.play(agi, prompt, barge_in, typed) != -1:
            return
        await agi.command("CHANNEL STATUS")  # 511 (ChannelHungUp) when the caller is gone
        log.error("FastAGI %s: Asterisk could not play %s: can it read fastagi.prompts_dir (see "
                  "fastagi.asterisk_prompts_dir)?", agi.env.channel, prompt)

    async def _answer(self, agi: AgiSession, conversation_id: str, session: str, ask: Ask,
                      typed: TypeAhead) -> list[Action]:
        prompt = "" if typed else await keypad.listening(agi, self.prompts.path(ask.text, ask.prompt_id), typed)
        digits = await keypad.read_answer(agi, prompt, ask.expect, typed)
        if not digits:
            return await self._handle(agi, conversation_id, session, Silence(seconds=ask.expect.no_input_seconds),
                                      typed)
        return await self.digits_to_core(conversation_id, session, digits, typed, agi)

    async def _handle(self, agi: AgiSession | None, conversation_id: str, session: str, event: Event,
                      typed: TypeAhead | None) -> list[Action]:
        work = self.core.handle(conversation_id, event, session_id=session)
        if agi is None or typed is None:
            return await work
        return await keypad.listening(agi, work, typed)

    async def digits_to_core(self, conversation_id: str, session: str, digits: str,
                             typed: TypeAhead | None = None, agi: AgiSession | None = None) -> list[Action]:
        """Feed keyed digits one by one (as a phone would); ``#`` closes an open digit string.
        Keys after the one the conversation answered go back to ``typed`` for the next question."""
        for i, digit in enumerate(digits):
            actions = await self._handle(agi, conversation_id, session, DtmfPressed(digit=digit, channel="voice"),
                                         typed)
            if actions:
                if typed is not None and digits[i + 1:]:
                    rest, later = digits[i + 1:], typed.take()
                    typed.add(rest + later)
                return actions
        actions = await self._handle(agi, conversation_id, session, DtmfPressed(digit="#", channel="voice"), typed)
        if actions:
            return actions
        return await self._handle(agi, conversation_id, session,
                                  RecognitionFailed(reason="keyed answer not understood", channel="voice"), typed)
