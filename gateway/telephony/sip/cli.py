"""``voicegw call``: place a real SIP call, play the caller's audio, record the reply."""

from __future__ import annotations

import argparse
import sys

from gateway.telephony.sip import softphone


def _call(args: argparse.Namespace) -> int:
    from gateway.voice.audio import AudioFormatError

    try:
        return softphone.run_from_args(args)
    except AudioFormatError as exc:  # a --play file that is missing or not a WAV: say so, no traceback
        print(f"voicegw call: {exc}", file=sys.stderr)
        return 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``voicegw call``."""
    parser = subparsers.add_parser(
        "call",
        help="place a SIP call: play a caller's audio and record what the far end says",
        description="A small softphone (pjsua2, its own endpoint): calls SIP-URI, plays each --play "
        "file after the answer and records the far end's audio to --record.",
    )
    softphone.add_arguments(parser)
    parser.set_defaults(func=_call)
