"""A small softphone: places real SIP calls, plays the caller's audio, records what comes back.

``voicegw call sip:bot@127.0.0.1:5060 --play caller.wav --record reply.wav`` is the quickest way
to hear the gateway. The same class places many calls at once from one process (one pjsua2
endpoint per process), which the concurrency tests and ``bench/sip_calls.py`` use: every call
reports what it heard (voiced frames, gaps inside the reply) and, per turn, the time from the
caller's last voiced frame to the first voiced frame of the reply (mouth-to-ear at the caller).

Playback of each ``--play`` file starts ``pause`` seconds after the answer (or after the previous
file), and, with ``quiet``, only once the far end has spoken and then been silent that long (so
a turn is spoken after the bot's prompt, as a person would).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pjsua2 as pj

from gateway.telephony.sip.media import read_frame, write_frame
from gateway.telephony.sip.runtime import PjRuntime, guarded

log = logging.getLogger(__name__)

VOICED_RMS = 300.0
"""A frame louder than this RMS (int16 scale, about -40 dBFS) counts as voiced."""
NOISE_FRAMES = 50
"""Frames of line hiss generated once per call and looped (1 s)."""
MAX_QUIET_WAIT_S = 20.0
"""A turn is spoken after at most this long even if the far end never speaks or never stops."""


def frame_rms(pcm: bytes) -> float:
    """RMS level of one 16-bit frame."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


@dataclass
class Turn:
    """One played segment and the reply it got (perf_counter seconds)."""

    last_word: float = 0.0
    reply_onset: float = 0.0

    @property
    def latency(self) -> float | None:
        return self.reply_onset - self.last_word if self.reply_onset and self.last_word else None


@dataclass
class PhoneCall:
    """Plan and outcome of one call (outcome fields are filled from pjsua2's threads)."""

    uri: str
    caller_id: str = ""  # the From user (the gateway's caller ID); "" = "caller"
    segments: list[bytes] = field(default_factory=list)  # caller audio, 8 kHz PCM (resampled per call)
    segments_rate: int = 8000
    pause: float = 0.5
    quiet: float = 0.0
    seconds: float = 10.0
    dtmf: str = ""
    dtmf_method: str = "rfc2833"
    ring_seconds: float = 30.0
    line_noise_dbfs: float | None = None  # telephone-line hiss, all through the call (under the words too)
    delay: float = 0.0  # placed this long after the first call of the run
    # outcome
    status: int = 0
    reason: str = ""
    codec: str = ""
    rate: int = 0
    answered_at: float = 0.0
    ended_at: float = 0.0
    recorded: bytearray = field(default_factory=bytearray)
    frames_rx: int = 0
    voiced_rx: int = 0
    first_voiced_rx: int = -1
    last_voiced_rx_idx: int = -1
    silent_after_voice: list[int] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    hangup_sent: bool = False
    # playback state (clock thread)
    _frames: list[list[bytes]] = field(default_factory=list)
    _seg: int = 0
    _pos: int = 0
    _wait_from: float = 0.0
    _last_voiced_rx_t: float = 0.0

    def gaps(self) -> int:
        """Silent frames between the first and the last voiced frame heard: 0 is clean audio when
        the far end plays a continuous tone (speech has pauses of its own)."""
        if self.first_voiced_rx < 0:
            return 0
        return sum(1 for i in self.silent_after_voice if i < self.last_voiced_rx_idx)

    def summary(self) -> dict[str, Any]:
        return {
            "uri": self.uri, "status": self.status, "reason": self.reason, "codec": self.codec,
            "rate": self.rate, "frames_rx": self.frames_rx, "voiced_rx": self.voiced_rx,
            "gaps": self.gaps(), "latencies": [t.latency for t in self.turns], "caller_id": self.caller_id,
            "marks": [[t.last_word, t.reply_onset] for t in self.turns],
            "answered": bool(self.answered_at), "answered_at": self.answered_at or None,
        }


class _PhonePort(pj.AudioMediaPort):
    def __init__(self, call: PhoneCall) -> None:
        super().__init__()
        self.call = call
        self.silence = bytes(call.rate // 50 * 2)
        self._hiss: list[bytes] = []
        self._hiss_pos = 0
        if call.line_noise_dbfs is not None:
            rng = np.random.default_rng(len(call.caller_id) + call.rate)
            level = 32768.0 * 10 ** (call.line_noise_dbfs / 20)
            noise = rng.standard_normal(call.rate // 50 * NOISE_FRAMES) * level
            self._hiss = [noise[i:i + call.rate // 50].astype("<i2").tobytes()
                          for i in range(0, len(noise), call.rate // 50)]

    def _quiet_frame(self) -> bytes:
        """What the caller's line carries between words: silence, or hiss at ``line_noise_dbfs``."""
        if not self._hiss:
            return self.silence
        self._hiss_pos += 1
        return self._hiss[self._hiss_pos % len(self._hiss)]

    @guarded
    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        c = self.call
        pcm = read_frame(frame)
        if not pcm:
            return
        idx = c.frames_rx
        c.frames_rx += 1
        c.recorded += pcm
        now = time.perf_counter()
        if frame_rms(pcm) >= VOICED_RMS:
            c.voiced_rx += 1
            c._last_voiced_rx_t = now
            c.last_voiced_rx_idx = idx
            if c.first_voiced_rx < 0:
                c.first_voiced_rx = idx
            if c.turns and not c.turns[-1].reply_onset and c._pos == 0 and now > c.turns[-1].last_word:
                c.turns[-1].reply_onset = now
        elif c.first_voiced_rx >= 0:
            c.silent_after_voice.append(idx)

    @guarded
    def onFrameRequested(self, frame: pj.MediaFrame) -> None:
        c = self.call
        pcm = self._quiet_frame()
        now = time.perf_counter()
        if c.answered_at and c._seg < len(c._frames):
            if c._pos == 0:
                waited = now - c._wait_from
                heard = c._last_voiced_rx_t > c._wait_from  # the far end spoke since the last turn
                quiet_ok = (not c.quiet or (heard and now - c._last_voiced_rx_t >= c.quiet)
                            or waited >= MAX_QUIET_WAIT_S)
                if waited >= c.pause and quiet_ok:
                    c.turns.append(Turn())
                else:
                    write_frame(frame, pcm)
                    return
            frames = c._frames[c._seg]
            pcm = frames[c._pos]
            c._pos += 1
            if frame_rms(pcm) >= VOICED_RMS:
                c.turns[-1].last_word = now + 0.02  # the end of this frame
            if self._hiss:  # the line's noise is under the words too, not only between them
                mixed = np.frombuffer(pcm, "<i2").astype(np.int32) + np.frombuffer(self._quiet_frame(), "<i2")
                pcm = np.clip(mixed, -32768, 32767).astype("<i2").tobytes()
            if c._pos >= len(frames):
                c._seg += 1
                c._pos = 0
                c._wait_from = now
        write_frame(frame, pcm)


class _PhoneCallObj(pj.Call):
    def __init__(self, phone: Softphone, account: pj.Account, call: PhoneCall) -> None:
        super().__init__(account)
        self.phone = phone
        self.call = call
        self.port: _PhonePort | None = None

    @guarded
    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        c = self.call
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and not c.answered_at:
            c.answered_at = c._wait_from = time.perf_counter()
            c.status = 200
            if c.dtmf:
                self.phone.runtime.submit(self._send_dtmf)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            c.status = c.status or info.lastStatusCode
            c.reason = info.lastReason
            c.ended_at = time.perf_counter()
            self.phone._ended(self)

    def _send_dtmf(self) -> None:
        prm = pj.CallSendDtmfParam()
        prm.digits = self.call.dtmf
        prm.method = (pj.PJSUA_DTMF_METHOD_SIP_INFO if self.call.dtmf_method == "info"
                      else pj.PJSUA_DTMF_METHOD_RFC2833)
        self.sendDtmf(prm)

    @guarded
    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        from gateway.voice.audio import resample

        info = self.getInfo()
        for media in info.media:
            if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            audio = self.getAudioMedia(media.index)
            if self.port is None:
                stream = self.getStreamInfo(media.index)
                c = self.call
                c.codec = stream.codecName
                c.rate = 16000 if stream.codecClockRate >= 16000 else 8000
                fb = c.rate // 50 * 2
                for seg in c.segments:
                    pcm = seg if c.segments_rate == c.rate else resample(seg, c.segments_rate, c.rate)
                    pcm += bytes(-len(pcm) % fb)
                    c._frames.append([pcm[i:i + fb] for i in range(0, len(pcm), fb)])
                port = _PhonePort(c)
                fmt = pj.MediaFormatAudio()
                fmt.init(pj.PJMEDIA_FORMAT_PCM, c.rate, 1, 20000, 16, 0, 0)
                port.createPort(f"phone-{id(self)}", fmt)
                self.port = port
            audio.startTransmit(self.port)
            self.port.startTransmit(audio)
            return


class Softphone:
    """A pjsua2 user agent that places calls (one per process: it owns the process's endpoint)."""

    def __init__(self, *, host: str = "127.0.0.1", codecs: tuple[str, ...] = ("PCMU", "PCMA", "G722"),
                 transport: str = "udp", max_calls: int = 32) -> None:
        self.host = host
        self.max_calls = max_calls
        self.codecs = [c.upper() for c in codecs]
        self.transport = transport
        self.runtime = PjRuntime("softphone", configure=self._configure, setup=self._setup,
                                 teardown=self._teardown)
        self._account: pj.Account | None = None
        self._accounts: dict[str, pj.Account] = {}  # one per caller ID presented (no registration)
        self._calls: dict[int, _PhoneCallObj] = {}
        self._spent_ports: list[_PhonePort] = []  # kept until teardown (see SipEndpoint._spare_ports)

    def _configure(self, cfg: pj.EpConfig) -> None:
        cfg.uaConfig.maxCalls = self.max_calls
        # Measure the gateway, not this phone: its jitter buffer keeps one frame (a desk phone's
        # holds 40-60 ms more), so a reply is heard as soon as its first packet arrives.
        cfg.medConfig.jbInit = 0
        cfg.medConfig.jbMinPre = 20
        cfg.medConfig.jbMaxPre = 80

    def _setup(self, ep: pj.Endpoint) -> None:
        for info in ep.codecEnum2():
            name = info.codecId.split("/")[0].upper()
            ep.codecSetPriority(info.codecId, 255 - self.codecs.index(name) if name in self.codecs else 0)
        cfg = pj.TransportConfig()
        cfg.port = 0
        cfg.boundAddress = self.host
        kinds = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP, "tls": pj.PJSIP_TRANSPORT_TLS}
        ep.transportCreate(kinds[self.transport], cfg)

    def _add_account(self) -> None:
        self._account = self._account_for("")

    def _account_for(self, caller_id: str) -> pj.Account:
        """The account whose From user is ``caller_id`` (made on first use)."""
        user = caller_id or "caller"
        account = self._accounts.get(user)
        if account is None:
            acfg = pj.AccountConfig()
            acfg.idUri = f"sip:{user}@{self.host}"
            acfg.mediaConfig.transportConfig.port = 0
            acfg.mediaConfig.transportConfig.boundAddress = self.host
            account = pj.Account()
            account.create(acfg, not self._accounts)
            self._accounts[user] = account
        return account

    def _teardown(self, ep: pj.Endpoint) -> None:
        if self._calls:
            ep.hangupAllCalls()
            self.runtime.pump(2.0, until=lambda: not self._calls)
        self._calls.clear()
        for port in self._spent_ports:
            self.runtime.retire(port)
        self._spent_ports.clear()
        for account in self._accounts.values():
            account.shutdown()
        self._accounts.clear()
        self._account = None

    def _dial(self, call: PhoneCall) -> None:
        assert self._account is not None
        obj = _PhoneCallObj(self, self._account_for(call.caller_id), call)
        uri = call.uri
        if self.transport != "udp" and "transport=" not in uri:
            uri += f";transport={self.transport}"
        obj.makeCall(uri, pj.CallOpParam(True))
        self._calls[obj.getId()] = obj

    def _ended(self, obj: _PhoneCallObj) -> None:
        self._calls = {k: v for k, v in self._calls.items() if v is not obj}
        if obj.port is not None:
            self._spent_ports.append(obj.port)
        self.runtime.retire(obj)
        obj.call.done.set()

    def _hangup(self, call: PhoneCall) -> None:
        for obj in list(self._calls.values()):
            if obj.call is call:
                obj.hangup(pj.CallOpParam())

    def run(self, calls: list[PhoneCall], timeout: float = 60.0) -> list[PhoneCall]:
        """Place every call (each ``delay`` after the start), hang each up after its ``seconds``,
        wait for all to end; ``timeout`` counts from each call's placing."""
        self.runtime.start()
        try:
            self.runtime.submit(self._add_account).result(10)
            started = time.perf_counter()
            placed: dict[int, float] = {}  # call index -> when it was placed
            pending = list(range(len(calls)))
            while pending:
                now = time.perf_counter()
                for i in list(pending):
                    call = calls[i]
                    if i not in placed:
                        if now - started < call.delay:
                            continue
                        placed[i] = now
                        try:
                            self.runtime.submit(self._dial, call).result(10)
                        except Exception as exc:  # noqa: BLE001 - one failed dial does not stop the others
                            call.reason = f"not placed: {exc}"
                            call.done.set()
                    if call.done.is_set():
                        pending.remove(i)
                    elif now - placed[i] >= timeout:
                        call.reason = call.reason or "timed out"
                        pending.remove(i)
                    elif not call.hangup_sent and (
                        (call.answered_at and now - call.answered_at >= call.seconds)
                        or (not call.answered_at and now - placed[i] >= call.ring_seconds)
                    ):
                        self.runtime.submit(self._hangup, call)
                        call.hangup_sent = True
                time.sleep(0.05)
        finally:
            self.runtime.stop()
        return calls


def _load_segments(paths: list[str]) -> tuple[list[bytes], int]:
    from gateway.voice.audio import read_wav, resample

    segs: list[bytes] = []
    for path in paths:
        pcm, rate = read_wav(path)
        segs.append(pcm if rate == 8000 else resample(pcm, rate, 8000))
    return segs, 8000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``voicegw call`` and ``python -m gateway.telephony.sip.softphone``."""
    parser.add_argument("uri", help="who to call, e.g. sip:bot@127.0.0.1:5060")
    parser.add_argument("--play", action="append", default=[], metavar="WAV",
                        help="caller audio, played after the answer (repeat for several turns)")
    parser.add_argument("--record", metavar="WAV", help="write what the far end says here")
    parser.add_argument("--seconds", type=float, default=0.0,
                        help="hang up this long after the answer (default: audio + 8 s)")
    parser.add_argument("--pause", type=float, default=0.5, help="silence before each --play file")
    parser.add_argument("--quiet", type=float, default=0.0,
                        help="also wait until the far end has spoken and then been silent this long")
    parser.add_argument("--ring-seconds", type=float, default=30.0, help="give up unanswered calls after this")
    parser.add_argument("--dtmf", default="", help="DTMF digits sent after the answer")
    parser.add_argument("--dtmf-method", choices=("rfc2833", "info"), default="rfc2833")
    parser.add_argument("--codecs", default="PCMU,PCMA,G722", help="codecs offered, preferred first")
    parser.add_argument("--transport", choices=("udp", "tcp", "tls"), default="udp")
    parser.add_argument("--calls", type=int, default=1, help="place this many calls at once")
    parser.add_argument("--stagger", type=float, default=0.0, metavar="SECONDS",
                        help="place call i this many seconds after call i-1 (default: all at once)")
    parser.add_argument("--caller-id", default="",
                        help="From user presented, {i} = the call's index (e.g. +1555020{i:02d}); a comma-separated "
                             "list is used in turn, call i taking entry i (modulo); default caller")
    parser.add_argument("--first-index", type=int, default=0, help="index of the first call (for --caller-id)")
    parser.add_argument("--line-noise", type=float, default=None, metavar="DBFS",
                        help="line hiss at this level all through the call, under the words and between them "
                             "instead of digital silence (e.g. -50: 30 dB under speech at -20 dBFS)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary per call")


def run_from_args(args: argparse.Namespace) -> int:
    """Place the call(s) described by ``args``; 0 when every call was answered."""
    from gateway.voice.audio import write_wav

    segments, seg_rate = _load_segments(args.play)
    audio_s = sum(len(s) for s in segments) / (2 * seg_rate)
    seconds = args.seconds or audio_s + args.pause * max(len(segments), 1) + 8.0
    ids = args.caller_id.split(",")
    calls = [PhoneCall(uri=args.uri, caller_id=ids[i % len(ids)].format(i=args.first_index + i), segments=segments,
                       segments_rate=seg_rate, pause=args.pause, quiet=args.quiet, seconds=seconds, dtmf=args.dtmf,
                       dtmf_method=args.dtmf_method, ring_seconds=args.ring_seconds, line_noise_dbfs=args.line_noise,
                       delay=i * max(args.stagger, 0.0))
             for i in range(max(args.calls, 1))]
    phone = Softphone(codecs=tuple(c.strip() for c in args.codecs.split(",") if c.strip()),
                      transport=args.transport, max_calls=max(len(calls) + 2, 4))
    phone.run(calls, timeout=seconds + args.ring_seconds + 15.0 + max(args.quiet, 0) * len(segments))
    for i, call in enumerate(calls):
        if args.record and call.rate:
            path = Path(args.record)
            if len(calls) > 1:
                path = path.with_name(f"{path.stem}-{i}{path.suffix}")
            write_wav(path, bytes(call.recorded), call.rate)
        if args.json:
            print(json.dumps(call.summary()), flush=True)
        else:
            lat = ", ".join(f"{t.latency * 1000:.0f} ms" for t in call.turns if t.latency is not None)
            print(f"call {i}: {call.status} {call.reason} codec={call.codec or '-'} "
                  f"heard {call.voiced_rx * 0.02:.1f} s of audio"
                  + (f", reply after {lat}" if lat else ""), flush=True)
    return 0 if all(c.status == 200 for c in calls) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.telephony.sip.softphone", description=__doc__)
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_from_args(args)


if __name__ == "__main__":
    raise SystemExit(main())
