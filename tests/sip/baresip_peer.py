"""baresip as a caller: configuration in a temp dir, driven from the command line.

The caller's audio comes from baresip's ``aufile`` source (a WAV file; the call ends when the
file does), audio output goes to ALSA's ``null`` device, and the ``sndfile`` filter writes what
was sent (``*-enc.wav``) and what was received (``*-dec.wav``) to ``rec/``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sip.conftest import free_port


def call_with_baresip(uri: str, wav: Path, workdir: Path, *, seconds: float) -> tuple[Path, str]:
    """Dial ``uri`` with baresip playing ``wav``; returns (received audio WAV, baresip's log)."""
    if shutil.which("baresip") is None:
        pytest.fail("baresip is not installed (Debian package baresip, in the Makefile's APT_PACKAGES)")
    conf = workdir / "baresip"
    rec = conf / "rec"
    rec.mkdir(parents=True, exist_ok=True)
    rtp = free_port()
    (conf / "config").write_text(
        "poll_method epoll\n"
        f"sip_listen 127.0.0.1:{free_port()}\n"
        "module_path /usr/lib/baresip/modules\n"
        "module g711.so\nmodule aufile.so\nmodule alsa.so\nmodule sndfile.so\n"
        "module_app account.so\nmodule_app menu.so\n"
        "audio_player alsa,null\naudio_alert alsa,null\n"
        f"audio_source aufile,{wav}\n"
        f"snd_path {rec}\n"
        f"rtp_ports {rtp}-{rtp + 40}\n"
    )
    (conf / "accounts").write_text("<sip:caller@127.0.0.1>;regint=0\n")
    done = subprocess.run(
        ["baresip", "-f", str(conf), "-e", f"/dial {uri}", "-t", str(int(seconds))],
        cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=seconds + 30,
    )
    log = done.stdout + done.stderr
    received = sorted(rec.glob("*-dec.wav"))
    assert received, f"baresip recorded nothing:\n{log[-3000:]}"
    return received[-1], log
