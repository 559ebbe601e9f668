"""RTP inactivity timeout: a SIP call whose far end sends no more RTP is hung up.

A caller that sends INVITE and ACK, then no RTP and no BYE (a dead NAT, a crashed phone, an
attacker) would otherwise hold one of its process's ``CALLS_PER_PROCESS`` pjsua2 call slots for
as long as the process lives. Every serious SBC/PBX has this timeout (Asterisk ``rtptimeout``,
FreeSWITCH ``media_timeout``).

What counts as received RTP: pjmedia's per-stream counter of RTP packets that came off the
network (``Call.getStreamStat(i).rtcp.rxStat.pkt``), read on the endpoint's runtime thread every
``CHECK_INTERVAL_S``. Not the frames the conference bridge hands ``CallAudioPort``: those keep
coming every 20 ms whether or not anything arrived (the jitter buffer fills the gaps).

- The clock starts when the call is confirmed (ACK), so a call that never sends any RTP ends too.
- The far end holding the call (its re-INVITE says ``sendonly`` or ``inactive``; pjsua reports
  the media as remote hold) switches to ``sip.rtp_hold_timeout_seconds``; any change of hold
  state restarts the clock.
- ``RtpClock`` is the decision, sans-IO (times in, verdict out); ``read_rx`` is the pjsua2 read.
"""

from __future__ import annotations

from dataclasses import dataclass

import pjsua2 as pj

CHECK_INTERVAL_S = 1.0
"""How often the calls' RTP counters are read: a timeout fires at most this late, and the runtime
thread spends a few microseconds per call on it."""

HOLD_STATES = frozenset({pj.PJSUA_CALL_MEDIA_REMOTE_HOLD, pj.PJSUA_CALL_MEDIA_LOCAL_HOLD})


@dataclass(frozen=True)
class RtpTimeouts:
    """Seconds without RTP that end a call: ``active`` (sendrecv) and ``hold``; 0 = off."""

    active: float
    hold: float

    @property
    def enabled(self) -> bool:
        return self.active > 0 or self.hold > 0


@dataclass(frozen=True)
class RxState:
    """What one read of a call found: RTP packets received so far, and whether it is on hold."""

    packets: int
    held: bool


@dataclass(frozen=True)
class Verdict:
    """A call that timed out: how long nothing came, and whether it was on hold."""

    idle: float
    held: bool


class RtpClock:
    """One call's RTP activity: started when the call is confirmed, fed each read."""

    def __init__(self, now: float) -> None:
        self.packets = -1
        self.held = False
        self.since = now  # the last time RTP arrived (or the hold state changed)
        self.fired = False

    def observe(self, now: float, rx: RxState, timeouts: RtpTimeouts) -> Verdict | None:
        """Feed one read; a ``Verdict`` once (the call is to be ended), else None."""
        if rx.held != self.held:
            self.held = rx.held
            self.since = now
        if rx.packets != self.packets:  # more arrived, or a new stream after a re-INVITE
            self.packets = rx.packets
            if rx.packets > 0:
                self.since = now
        limit = timeouts.hold if self.held else timeouts.active
        if self.fired or limit <= 0 or now - self.since < limit:
            return None
        self.fired = True
        return Verdict(now - self.since, self.held)


def read_rx(call: pj.Call, last_packets: int) -> RxState:
    """Runtime thread: the call's audio stream counter and hold state (``last_packets`` when the
    call has no audio stream to read, e.g. no media negotiated or a stream being replaced)."""
    held = False
    info = call.getInfo()  # held while its media are read: they point into it
    for media in info.media:
        if media.type != pj.PJMEDIA_TYPE_AUDIO:
            continue
        held = media.status in HOLD_STATES
        try:
            stat = call.getStreamStat(media.index)  # held too: ``rtcp`` points into it
        except pj.Error:
            break
        return RxState(int(stat.rtcp.rxStat.pkt), held)
    return RxState(max(last_packets, 0), held)
