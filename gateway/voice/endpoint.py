"""Endpointing: per-frame speech probabilities in, turn events out (pure logic, no I/O).

The endpointer sees one 20 ms caller frame at a time with its VAD probability and, while the
bot is talking, the level of what the bot played. It keeps its own audio clock (frames seen x
20 ms), so every decision is deterministic and testable without a clock or a network.

States (``TurnState``, moved only through the ``TRANSITIONS`` table, as h11 keeps its
connection states): ``IDLE`` (waiting; a pre-roll ring keeps the last ``pre_roll_ms`` so the
first syllable is not clipped) -> ``CANDIDATE`` (speech frames seen, not yet enough) ->
``SPEECH`` (an utterance; ends after ``end_of_turn_ms`` of silence or is cut at
``max_utterance_seconds``) -> ``DRAIN`` (after a cut, wait for the caller to pause before
listening again).

Events, all stamped in audio seconds since the first frame:

- ``SpeechOnset``: the first speech frames (``onset_frames``). While the bot talks the session
  pauses playback here, so the caller hears the bot stop within a few frames of speaking.
- ``SpeechStarted``: enough speech to be a turn (``min_speech_ms``; while the bot talks, also
  ``barge_in_min_ms`` of speech louder than the bot's own echo). While the bot talks, this is
  barge-in: the queued audio is dropped.
- ``SpeechCancelled``: the onset was a click, a cough or echo; paused playback resumes.
- ``SpeechPaused``: optional (``speculative_ms``), silence inside the turn long enough to start
  recognizing speculatively; ``SpeechEnded`` follows unless the caller resumes. While the caller
  stays silent in that pause, ``set_window`` may shorten the end-of-turn window (the speculative
  transcript is a complete answer) or lengthen it (it trails off with "and", "um"), see
  ``gateway/voice/turn_end.py``; speech resuming restores the usual window.
- ``SpeechEnded``: the turn's audio (pre-roll, speech, a short tail).
- ``MaxUtterance``: the turn ran past ``max_utterance_seconds``; its audio so far.
- ``NoInput``: the no-input timer armed after a prompt ran out.

Echo: on a line that leaks the bot's audio back, the echo is speech to a VAD. While the bot
talks (and ``ECHO_TAIL_MS`` after), a frame counts as the caller's speech only if it is louder
than the echo expected from what the bot played: the input/output level ratio seen while the
caller is quiet estimates the line's echo coupling, and caller speech must exceed that estimate
by ``echo_margin`` (6 dB). Quieter leaks of the bot's own voice never barge in.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from gateway.voice.audio import FRAME_MS

ECHO_TAIL_MS = 300
"""How long after the bot's last audible frame the echo gate stays on (echo path delay)."""
ECHO_DECAY = 0.99
"""Per-frame decay of the energies the echo coupling is estimated from (about 2 s memory)."""
ECHO_MIN_ENERGY = 50 * 0.05**2
"""Bot output energy (about 1 s at -26 dBFS) needed before the estimate replaces the default."""


class TurnState(enum.Enum):
    """Where the endpointer is in the caller's turn (module docstring)."""

    IDLE = "idle"
    CANDIDATE = "candidate"
    SPEECH = "speech"
    DRAIN = "drain"


class Trigger(enum.Enum):
    """What moves the endpointer from one ``TurnState`` to the next."""

    SPEECH_SEEN = "a speech frame while waiting"
    SPEECH_CONFIRMED = "enough speech for a turn"
    ONSET_CANCELLED = "too long a gap in the first frames (a click, a cough, echo)"
    TURN_ENDED = "the end-of-turn silence window"
    TOO_LONG = "max_utterance_seconds reached"
    CALLER_PAUSED = "end_of_turn_ms of silence after a cut"


TRANSITIONS: dict[TurnState, dict[Trigger, TurnState]] = {
    TurnState.IDLE: {Trigger.SPEECH_SEEN: TurnState.CANDIDATE},
    TurnState.CANDIDATE: {Trigger.SPEECH_CONFIRMED: TurnState.SPEECH, Trigger.ONSET_CANCELLED: TurnState.IDLE},
    TurnState.SPEECH: {Trigger.TURN_ENDED: TurnState.IDLE, Trigger.TOO_LONG: TurnState.DRAIN},
    TurnState.DRAIN: {Trigger.CALLER_PAUSED: TurnState.IDLE},
}
"""Every move the endpointer can make; any other is a bug (``EndpointStateError``)."""


class EndpointStateError(RuntimeError):
    """A move the transition table does not allow (a bug in the endpointer, not bad audio)."""


@dataclass(frozen=True)
class EndpointConfig:
    """Endpointing parameters; ``from_settings`` maps the gateway's voice settings."""

    threshold: float = 0.5
    hysteresis: float = 0.15
    onset_frames: int = 2
    min_speech_ms: int = 200
    candidate_gap_ms: int = 100
    end_of_turn_ms: int = 600
    max_utterance_seconds: float = 20.0
    pre_roll_ms: int = 300
    tail_ms: int = 200
    barge_in: bool = True
    barge_in_min_ms: int = 120
    speculative_ms: int = 0
    echo_margin: float = 2.0
    default_echo_coupling: float = 0.25
    onset_lag_ms: int = 40
    end_lag_ms: int = 40
    early_end: bool = True
    complete_end_ms: int = 250
    range_end_ms: int = 400
    sentence_end_ms: int = 320
    hold_ms: int = 1000
    backchannels: bool = True
    backchannel_max_ms: int = 900

    @classmethod
    def from_settings(cls, voice: object) -> "EndpointConfig":
        """Build from ``settings.voice`` (``VoiceSettings``)."""
        ep = voice.endpoint  # type: ignore[attr-defined]
        vad = voice.vad  # type: ignore[attr-defined]
        extra = {
            name: getattr(ep, name)
            for name in ("pre_roll_ms", "speculative_ms", "echo_margin", "early_end", "complete_end_ms",
                         "range_end_ms", "sentence_end_ms", "hold_ms", "backchannels", "backchannel_max_ms")
            if hasattr(ep, name)
        }
        return cls(
            threshold=vad.threshold,
            min_speech_ms=ep.min_speech_ms,
            end_of_turn_ms=ep.end_of_turn_ms,
            max_utterance_seconds=float(ep.max_utterance_seconds),
            barge_in=ep.barge_in,
            barge_in_min_ms=ep.barge_in_min_ms,
            **extra,
        )


@dataclass(frozen=True)
class SpeechOnset:
    at: float
    during_playback: bool


@dataclass(frozen=True)
class SpeechStarted:
    at: float
    barge_in: bool


@dataclass(frozen=True)
class SpeechCancelled:
    at: float


@dataclass(frozen=True)
class SpeechPaused:
    at: float
    audio: bytes
    started_at: float
    serial: int = 0
    """Names this pause for ``Endpointer.set_window``."""


@dataclass(frozen=True)
class SpeechEnded:
    at: float
    audio: bytes
    started_at: float
    early: str = ""
    """Why the window was shorter than ``end_of_turn_ms`` (``set_window``'s reason), if it was."""
    pause: int = 0
    """The ``SpeechPaused.serial`` this silence began with (0: none): the speech is the same, only
    silence came after, so a transcript of that pause's audio is the turn's."""


@dataclass(frozen=True)
class MaxUtterance:
    at: float
    audio: bytes
    started_at: float


@dataclass(frozen=True)
class NoInput:
    at: float
    waited: float


EndpointEvent = SpeechOnset | SpeechStarted | SpeechCancelled | SpeechPaused | SpeechEnded | MaxUtterance | NoInput


def frame_rms(frame: bytes) -> float:
    """Root-mean-square level of 16-bit PCM, 0..1."""
    if not frame:
        return 0.0
    x = np.frombuffer(frame, dtype="<i2").astype(np.float32)
    return float(math.sqrt(float(np.dot(x, x)) / len(x))) / 32768.0


BLOCK_SECONDS = 0.01
"""Energy blocks used to place speech boundaries finer than the VAD's 20-32 ms steps."""
NOISE_RATIO = 1.5
"""A block is speech when 3.5 dB over the line's noise floor (30th percentile of quiet blocks) ..."""
PEAK_RATIO = 0.01
"""... and not more than 40 dB below the utterance's loudest block."""
ABS_FLOOR = 30.0 / 32768.0
"""Blocks below this level are silence whatever the line."""
END_LOOKAHEAD_MS = 200
"""How much earlier than the VAD's count the end-of-turn window may close (its release lag)."""
MAX_REFINE_BLOCKS = 20
BARGE_PRE_ROLL_MS = 20
"""Pre-roll kept before speech that began while the bot was talking (the rest is its echo)."""
"""The energy onset may lie at most 200 ms before the VAD's."""


def _block_rms(frames: list[bytes]) -> np.ndarray:
    """10 ms RMS levels (0..1) of consecutive 20 ms frames."""
    if not frames:
        return np.zeros(0, np.float32)
    x = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float32) / 32768.0
    size = max(1, len(frames[0]) // 4)
    n = len(x) // size
    x = x[: n * size].reshape(n, size)
    return np.sqrt(np.mean(x * x, axis=1))


class EchoGate:
    """Decides whether an input frame is louder than the bot's own echo would be.

    The line's echo coupling is the ratio of input to output energy over the recent past,
    measured on frames the caller was not talking in (the echo delay cancels out over a few
    seconds). Until about a second of the bot's audio has been heard, ``default_coupling`` holds.
    """

    def __init__(self, margin: float, default_coupling: float):
        self.margin = margin
        self.default_coupling = default_coupling
        self._out: deque[float] = deque(maxlen=ECHO_TAIL_MS // FRAME_MS)
        self._in_energy = 0.0
        self._out_energy = 0.0
        self._coupling = default_coupling
        self._quiet = 1 << 30

    def observe_output(self, level: float) -> None:
        self._out.append(level)
        self._quiet = 0 if level > 0.0 else self._quiet + 1

    @property
    def active(self) -> bool:
        """The bot was audible within the echo tail."""
        return self._quiet < (self._out.maxlen or 0)

    @property
    def coupling(self) -> float:
        return self._coupling

    def passes(self, in_level: float) -> bool:
        ref = max(self._out, default=0.0)
        if ref <= 0.0:
            return True
        return in_level > ref * self._coupling * self.margin

    def learn(self, in_level: float) -> None:
        """Record a frame heard while the caller was not talking (echo and line noise only).

        A frame louder than the echo the estimate allows is not learned: it is the caller starting
        to talk before the VAD says so (double talk), and learning it would raise the estimate
        until the caller's own speech passed for echo. The bound is never below what the default
        coupling allows: an estimate learned on a line with no echo yet (a caller silent through
        the greeting, then on a speakerphone) must rise when the echo comes, not let it through
        as speech for the rest of the call."""
        ref = max(self._out, default=0.0)
        if ref <= 0.0 or in_level > ref * max(self._coupling, self.default_coupling) * self.margin:
            return
        out = self._out[-1] if self._out else 0.0
        self._in_energy = self._in_energy * ECHO_DECAY + in_level * in_level
        self._out_energy = self._out_energy * ECHO_DECAY + out * out
        if self._out_energy >= ECHO_MIN_ENERGY:
            self._coupling = max(math.sqrt(self._in_energy / self._out_energy), 0.01)


class Endpointer:
    """Turns (probability, frame) pairs into turn events; one per call."""

    def __init__(self, config: EndpointConfig, sample_rate: int):
        self.config = config
        self.sample_rate = sample_rate
        self.frame_seconds = FRAME_MS / 1000.0
        self.frames = 0
        self.state = TurnState.IDLE
        self._pre: deque[bytes] = deque(maxlen=max(0, config.pre_roll_ms // FRAME_MS))
        self._audio: list[bytes] = []
        self._pre_count = 0
        self._start = 0.0
        self._origin = 0.0
        self._speech_frames = 0
        self._gap = 0
        self._last_speech_frame = 0  # index in _audio just after the last speech frame
        self._last_strong_frame = 0  # same, for frames at or above the onset threshold
        self._noise = 0.0  # 10 ms RMS line-noise floor measured while the caller is quiet
        self._onset_sent = False
        self._barge = False
        self._paused_sent = False
        self._pause_serial = 0
        self._pausing = False  # silent since the last SpeechPaused
        self._window_ms = 0  # this pause's end-of-turn window (0: end_of_turn_ms)
        self._window_reason = ""
        self._no_input_at: float | None = None
        self._no_input_armed = 0.0
        self._max_frames = int(config.max_utterance_seconds * 1000 // FRAME_MS)
        self._echo = EchoGate(config.echo_margin, config.default_echo_coupling)

    @property
    def now(self) -> float:
        """Audio seconds seen so far."""
        return self.frames * self.frame_seconds

    @property
    def talking(self) -> bool:
        """The caller is speaking this very frame (in a turn, not in a pause)."""
        return self.state is TurnState.SPEECH and self._gap == 0

    @property
    def in_turn(self) -> bool:
        """The caller is talking (a confirmed utterance is open)."""
        return self.state is TurnState.SPEECH

    def set_window(self, serial: int, window_ms: int, reason: str = "") -> bool:
        """End the turn after ``window_ms`` of silence instead of ``end_of_turn_ms``, if the caller
        is still silent in the pause ``serial`` (a ``SpeechPaused``); False when they went on."""
        if self.state is not TurnState.SPEECH or not self._pausing or serial != self._pause_serial:
            return False
        self._window_ms = max(FRAME_MS, int(window_ms))
        self._window_reason = reason if self._window_ms < self.config.end_of_turn_ms else ""
        return True

    def arm_no_input(self, seconds: float) -> None:
        """Start the no-input timer now (the prompt has finished playing)."""
        self._no_input_armed = self.now
        self._no_input_at = self.now + seconds

    def disarm_no_input(self) -> None:
        self._no_input_at = None

    @property
    def no_input_armed(self) -> bool:
        return self._no_input_at is not None

    def _ms(self, frames: int) -> int:
        return frames * FRAME_MS

    def process(
        self,
        prob: float,
        frame: bytes,
        bot_level: float | None = None,
        barge_in_allowed: bool = True,
    ) -> list[EndpointEvent]:
        """Feed one frame; ``bot_level`` is the RMS the bot played this tick (None: bot silent)."""
        cfg = self.config
        t0 = self.now
        self.frames += 1
        events: list[EndpointEvent] = []
        bot_talking = bot_level is not None
        self._echo.observe_output(bot_level or 0.0)
        gated = self._echo.active
        in_level = frame_rms(frame) if gated else 0.0

        if self.state in (TurnState.IDLE, TurnState.CANDIDATE):
            speech = prob >= cfg.threshold
            if gated and speech and not self._echo.passes(in_level):
                speech = False
            if bot_talking and not (barge_in_allowed and cfg.barge_in):
                speech = False
            if gated and not speech and self.state is TurnState.IDLE:
                self._echo.learn(in_level)
        else:
            speech = prob >= max(cfg.threshold - cfg.hysteresis, 0.05)

        if self.state is TurnState.IDLE:
            if speech:
                self._move(Trigger.SPEECH_SEEN)
                self._audio = list(self._pre)
                self._pre_count = len(self._audio)
                self._pre.clear()
                self._audio.append(frame)
                self._start = t0
                self._speech_frames = 1
                self._gap = 0
                self._onset_sent = False
                self._barge = bot_talking
                events.extend(self._candidate_progress(bot_talking))
            else:
                self._pre.append(frame)
                if self._no_input_at is not None and self.now >= self._no_input_at - 1e-9:
                    events.append(NoInput(at=self.now, waited=self.now - self._no_input_armed))
                    self._no_input_at = None
        elif self.state is TurnState.CANDIDATE:
            self._audio.append(frame)
            if speech:
                self._speech_frames += 1
                self._gap = 0
                events.extend(self._candidate_progress(bot_talking))
            else:
                self._gap += 1
                if self._ms(self._gap) > cfg.candidate_gap_ms:
                    if self._onset_sent:
                        events.append(SpeechCancelled(at=self.now))
                    self._move(Trigger.ONSET_CANCELLED)
                    for f in self._audio[-self._pre.maxlen :] if self._pre.maxlen else []:
                        self._pre.append(f)
                    self._audio = []
        elif self.state is TurnState.SPEECH:
            self._audio.append(frame)
            if speech:
                self._gap = 0
                self._last_speech_frame = len(self._audio)
                if prob >= cfg.threshold:
                    self._last_strong_frame = len(self._audio)
                self._paused_sent = False
                self._pausing = False
                self._window_ms, self._window_reason = 0, ""
            else:
                self._gap += 1
                silence_ms = self._ms(self._gap)
                if (cfg.speculative_ms and not self._paused_sent
                        and silence_ms >= min(cfg.speculative_ms, cfg.end_of_turn_ms) - END_LOOKAHEAD_MS
                        and (silence_ms >= cfg.speculative_ms
                             or self.now - self._speech_end() >= cfg.speculative_ms / 1000.0 - 1e-9)):
                    # like the window below, measured from the energy end once the VAD has let go
                    self._paused_sent = True
                    self._pausing = True
                    self._pause_serial += 1
                    events.append(SpeechPaused(self._speech_end(), self._utterance(), self._start,
                                               self._pause_serial))
                window = self._window_ms or cfg.end_of_turn_ms
                # The VAD lets go 50-150 ms after the speech stops, so from a little before the
                # window would close on its count, the window is measured from the energy end.
                if silence_ms >= window - END_LOOKAHEAD_MS:
                    end = self._speech_end()
                    if self.now - end >= window / 1000.0 - 1e-9 or silence_ms >= window:
                        events.append(SpeechEnded(end, self._utterance(), self._start, self._window_reason,
                                                  self._pause_serial if self._pausing else 0))
                        self._move(Trigger.TURN_ENDED)
                        self._reset_idle()
                        return events
            if len(self._audio) - self._pre_count >= self._max_frames:
                events.append(MaxUtterance(self.now, b"".join(self._audio), self._start))
                self._move(Trigger.TOO_LONG)
                self._audio = []
                self._gap = 0
        elif self.state is TurnState.DRAIN:
            self._gap = 0 if speech else self._gap + 1
            if self._ms(self._gap) >= cfg.end_of_turn_ms:
                self._move(Trigger.CALLER_PAUSED)
                self._reset_idle()
        return events

    def _candidate_progress(self, bot_talking: bool) -> list[EndpointEvent]:
        cfg = self.config
        out: list[EndpointEvent] = []
        if not self._onset_sent and self._speech_frames >= cfg.onset_frames:
            self._onset_sent = True
            out.append(SpeechOnset(at=self._start, during_playback=bot_talking))
        barge = self._barge or bot_talking
        need_ms = max(cfg.min_speech_ms, cfg.barge_in_min_ms) if barge else cfg.min_speech_ms
        if self._ms(self._speech_frames) >= max(need_ms, FRAME_MS * cfg.onset_frames):
            if not self._onset_sent:
                self._onset_sent = True
                out.append(SpeechOnset(at=self._start, during_playback=bot_talking))
            self._move(Trigger.SPEECH_CONFIRMED)
            self._gap = 0
            self._last_speech_frame = len(self._audio)
            self._last_strong_frame = len(self._audio)
            self._start = self._refine_start()
            self._paused_sent = False
            self._no_input_at = None
            out.append(SpeechStarted(at=self._start, barge_in=barge))
        return out

    def _frame_time(self, index: int) -> float:
        """Audio time of the start of ``_audio[index]``."""
        return self._origin + index * self.frame_seconds

    def _refine_start(self) -> float:
        """Onset from the energy rise just before the VAD fired (VADs fire 20-140 ms late)."""
        self._origin = self._start - self._pre_count * self.frame_seconds
        blocks = _block_rms(self._audio)
        pre = blocks[: 2 * self._pre_count]
        if len(pre) >= 6:
            self._noise = float(np.percentile(pre, 30))
        peak = float(blocks[2 * self._pre_count :].max(initial=0.0))
        thr = max(self._noise * NOISE_RATIO, peak * PEAK_RATIO, ABS_FLOOR)
        b = min(2 * self._pre_count + 3, len(blocks) - 1)  # 30 ms into what the VAD called speech
        if b < 0 or blocks[b] <= thr or self._barge:  # over the bot, energy before the VAD is its echo
            return max(self._origin, self._start - self.config.onset_lag_ms / 1000.0)
        low = max(0, 2 * self._pre_count - MAX_REFINE_BLOCKS)
        while b - 1 >= low and (blocks[b - 1] > thr or (b - 2 >= low and blocks[b - 2] > thr)):
            b -= 1
        return self._origin + b * BLOCK_SECONDS

    def _speech_end(self) -> float:
        """End of speech: the last energy above the line's floor near where the VAD let go."""
        cfg = self.config
        blocks = _block_rms(self._audio)
        tail = blocks[2 * self._last_speech_frame :]
        noise = float(np.percentile(tail, 30)) if len(tail) >= 6 else self._noise
        peak = float(blocks[2 * self._pre_count : 2 * self._last_speech_frame].max(initial=0.0))
        thr = max(noise * NOISE_RATIO, peak * PEAK_RATIO, ABS_FLOOR)
        fallback = self._frame_time(self._last_strong_frame) - cfg.end_lag_ms / 1000.0
        low = max(2 * self._pre_count + 1, 2 * self._last_strong_frame - MAX_REFINE_BLOCKS)
        b = min(len(blocks), 2 * self._last_speech_frame + 4) - 1
        while b >= low and not (blocks[b] > thr and blocks[b - 1] > thr):
            b -= 1
        if b < low:
            return max(self._start, fallback)
        return max(self._start, self._origin + (b + 1) * BLOCK_SECONDS)

    def _skip(self) -> int:
        # Speech over the bot: the pre-roll holds the bot's own echo, which the recognizer would
        # hear as the caller's first word ("you're okay"), so only a little of it is kept.
        return max(0, self._pre_count - BARGE_PRE_ROLL_MS // FRAME_MS) if self._barge else 0

    def _utterance(self) -> bytes:
        tail = self.config.tail_ms // FRAME_MS
        return b"".join(self._audio[self._skip(): self._last_speech_frame + tail])

    def audio_since(self, index: int) -> tuple[bytes, int]:
        """The open turn's audio from frame ``index`` on, as its utterance begins (a recognizer
        streaming the turn is fed this), and the index to go on from; nothing outside a turn."""
        if self.state is not TurnState.SPEECH:
            return b"", index
        return b"".join(self._audio[max(index, self._skip()):]), len(self._audio)

    def _move(self, trigger: Trigger) -> None:
        """Take the transition ``trigger`` makes from the current state (``TRANSITIONS``)."""
        target = TRANSITIONS[self.state].get(trigger)
        if target is None:
            raise EndpointStateError(f"{trigger.name} ({trigger.value}) cannot happen in {self.state.name}")
        self.state = target

    def _reset_idle(self) -> None:
        """Forget the utterance (the state is already ``IDLE``)."""
        self._pausing = False
        self._window_ms, self._window_reason = 0, ""
        self._audio = []
        self._pre.clear()
        self._gap = 0
        self._speech_frames = 0
