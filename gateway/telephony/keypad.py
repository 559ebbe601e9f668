"""Keys on the AGI keypad route: none pressed during a prompt is lost (type-ahead), in order.

What Asterisk 22 does (recorded in ``tests/telephony/captures/agi_f_type_ahead``):

* ``STREAM FILE name "0123456789*#"`` stops at a key and answers its ASCII code with the
  position reached: ``200 result=52 endpos=8960`` ("4" at sample 8960).
* ``STREAM FILE name ""`` plays to the end and *drops* every key pressed meanwhile.
* ``STREAM FILE name "0123456789*#" 8960`` resumes the prompt where it stopped.
* ``GET DATA "" 2000 3`` sent at once after the key collects the keys the caller goes on
  typing, without a prompt: ``200 result=23 (timeout)``.
* ``WAIT FOR DIGIT 300`` answers a key pressed while it waits (``200 result=53``), ``result=0``
  after the timeout; keys pressed while no command runs are lost.

So every prompt listens for every key. A key during a prompt the caller may interrupt ends it
and is kept; a key during one they may not (a transfer announcement, a goodbye) is kept and the
prompt resumes where it stopped. The next question is then not asked (the caller is already
answering it): the keys typed so far are its answer, and ``GET DATA ""`` collects the rest of a
digit string. While the gateway itself works between two commands (the conversation core
answering, a prompt being synthesized), ``WAIT FOR DIGIT`` listens in short slices, so keys
typed into that silence are kept too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, TypeVar

from agi.server import AgiSession, ChannelHungUp
from gateway.core.actions import Expect

log = logging.getLogger(__name__)

ALL_KEYS = "0123456789*#"
MAX_TYPED_KEYS = 64
"""Keys held for the conversation at most (a digit string is 32 at most; more is a stuck key)."""
MAX_RESUMES = 32
"""Times one non-interruptible prompt resumes after keys before it is given up (a stuck key)."""
LISTEN_AFTER_SECONDS = 0.05
"""Work shorter than this between two commands is waited for; longer work is listened through."""
LISTEN_SLICE_MS = 100
"""Length of one ``WAIT FOR DIGIT`` while the gateway works: the most it adds to that work."""
T = TypeVar("T")


class TypeAhead:
    """Keys pressed and not yet given to the conversation, oldest first (bounded)."""

    def __init__(self, limit: int = MAX_TYPED_KEYS):
        self.limit = limit
        self._keys: list[str] = []
        self.dropped = 0

    def add(self, keys: str) -> None:
        for key in keys:
            if len(self._keys) >= self.limit:
                self.dropped += 1
                continue
            self._keys.append(key)

    def take(self) -> str:
        keys, self._keys = "".join(self._keys), []
        return keys

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __str__(self) -> str:
        return "".join(self._keys)


async def play(agi: AgiSession, prompt: str, barge_in: bool, typed: TypeAhead) -> int:
    """Play ``prompt`` listening for every key (kept in ``typed``); returns STREAM FILE's last result.

    ``barge_in``: a key ends the prompt. Otherwise the prompt resumes after each key.
    -1 is a hangup or a file Asterisk cannot read (the caller tells them apart).
    """
    offset = 0
    for _ in range(MAX_RESUMES):
        args: tuple[str | int, ...] = (offset,) if offset else ()
        response = await agi.command("STREAM FILE", prompt, _quoted(ALL_KEYS), *args)
        key = response.digit
        if response.value == -1 or not key:
            return response.value if response.value is not None else 0
        typed.add(key)
        if barge_in:
            return response.value or 0
        offset = response.endpos or 0
    log.warning("FastAGI %s: keys kept interrupting %s; not resumed again", agi.env.channel, prompt)
    return 0


def answer_length(expect: Expect) -> int:
    """How many keys answer ``expect`` at most (one for yes/no, a menu, or 0 for an agent)."""
    if expect.kind in ("yesno", "choice", "open", "none"):
        return 1
    return expect.max_digits or 32


async def read_answer(agi: AgiSession, prompt: str, expect: Expect, typed: TypeAhead) -> str:
    """The caller's keyed answer: the keys already typed, completed by ``GET DATA ""`` when a
    digit string is not yet whole; else ``GET DATA prompt`` asks the question ("" = no input)."""
    most = answer_length(expect)
    timeout_ms = max(1000, int(expect.no_input_seconds * 1000))
    if typed:
        keys = typed.take()
        if len(keys) >= most or "#" in keys:
            return keys
        more, _ = await agi.get_data("", timeout_ms, most - len(keys))
        return keys + more
    digits, _timed_out = await agi.get_data(prompt, timeout_ms, most)
    return digits


async def listening(agi: AgiSession, work: Awaitable[T], typed: TypeAhead) -> T:
    """Await ``work`` (the core, a synthesis); if it takes a while, listen for keys meanwhile."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=LISTEN_AFTER_SECONDS)
    try:
        while not done:
            key = await agi.wait_for_digit(LISTEN_SLICE_MS)
            if key:
                typed.add(key)
            done = {task} if task.done() else set()
    except ChannelHungUp:
        await asyncio.wait({task})  # the work (a core turn) finishes; the hangup is reported after
        if not task.cancelled():
            task.exception()  # retrieved: the hangup is what this call reports
        raise
    except BaseException:
        task.cancel()
        raise
    return task.result()


def _quoted(keys: str) -> str:
    from agi.protocol import Quoted

    return Quoted(keys)
