"""baresip as a caller: configuration in a temp dir, driven from the command line.

The caller's audio comes from baresip's ``aufile`` source (a WAV file; the call ends when the
file does), audio output goes to ALSA's ``null`` device, and the ``sndfile`` filter writes what
was sent (``*-enc.wav``) and what was received (``*-dec.wav``) to ``rec/``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

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


def answer_with_baresip(number: str, wav: Path, workdir: Path, *, seconds: float) -> tuple[int, Any]:
    """baresip as the callee at ``sip:<number>@127.0.0.1:<port>``: answers at once, plays ``wav``
    (a person's hello or a voicemail greeting) and records what it hears. Returns (its SIP port,
    the running process); ``finish_answering`` waits for it and gives (received WAV, log)."""
    if shutil.which("baresip") is None:
        pytest.fail("baresip is not installed (Debian package baresip, in the Makefile's APT_PACKAGES)")
    conf = workdir / "baresip-callee"
    rec = conf / "rec"
    rec.mkdir(parents=True, exist_ok=True)
    port, rtp = free_port(), free_port()
    (conf / "config").write_text(
        "poll_method epoll\n"
        f"sip_listen 127.0.0.1:{port}\n"
        "module_path /usr/lib/baresip/modules\n"
        "module g711.so\nmodule aufile.so\nmodule alsa.so\nmodule sndfile.so\n"
        "module_app account.so\nmodule_app menu.so\n"
        "audio_player alsa,null\naudio_alert alsa,null\n"
        f"audio_source aufile,{wav}\n"
        f"snd_path {rec}\n"
        f"rtp_ports {rtp}-{rtp + 40}\n"
    )
    (conf / "accounts").write_text(f"<sip:{number}@127.0.0.1>;regint=0;answermode=auto\n")
    proc = subprocess.Popen(["baresip", "-f", str(conf), "-t", str(int(seconds))], cwd=workdir,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return port, (proc, rec)


def finish_answering(handle: Any, timeout: float) -> tuple[Path, str]:
    proc, rec = handle
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    received = sorted(rec.glob("*-dec.wav"))
    assert received, f"baresip recorded nothing:\n{out[-3000:]}"
    return received[-1], out
