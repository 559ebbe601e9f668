"""One typed settings tree for the whole gateway.

Defaults live in ``config/gateway.yaml`` (every key, with a one-line comment) and are mirrored
here as pydantic models. Precedence, lowest first: the defaults file, a ``--config`` file,
environment variables ``VOICEGW_SECTION__KEY=value``. A bad value fails at start with one
message naming the key, the value and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.client_address import parse_networks

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PACKAGE_ROOT / "config" / "gateway.yaml"
ENV_PREFIX = "VOICEGW_"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    max_request_bytes: int = Field(1_048_576, gt=0)
    trusted_proxies: tuple[str, ...] = ()
    header_timeout_seconds: float = Field(10.0, gt=0)
    idle_timeout_seconds: float = Field(60.0, gt=0)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(value)  # ValueError names the bad entry
        return value


class ContextSettings(Section):
    backend: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: str = "conversations.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    resume_window_minutes: float = Field(60.0, ge=0)
    busy_timeout_ms: int = Field(5000, ge=0)
    # Redis outages (voicegw serve on backend redis): see gateway/context/outage.py
    spool_path: str = "spool.db"
    outage_timeout_ms: int = Field(1500, ge=50, le=60_000)
    outage_probe_seconds: float = Field(1.0, gt=0, le=60)
    spool_max_ops: int = Field(500_000, ge=1000)
    node_cache_conversations: int = Field(5000, ge=100)


class NluSettings(Section):
    threshold: float = Field(0.45, ge=0.0, le=1.0)


class JourneySettings(Section):
    directory: str = "config/journeys"
    default: str = "welcome"
    max_no_match: int = Field(3, ge=1)
    max_no_input: int = Field(3, ge=1)
    agent_queue: str = "support"
    callback_offer_seconds: float = Field(120.0, ge=0)


class CrmSettings(Section):
    backend: Literal["sample"] = "sample"
    sqlite_path: str = "crm.db"
    timeout_seconds: float = Field(2.0, gt=0)


class RasaSettings(Section):
    action_server_url: str = ""
    timeout_seconds: float = Field(3.0, gt=0)
    serve_actions: bool = False
    actions_port: int = Field(5055, ge=0, le=65535)


class RedactionSettings(Section):
    card_numbers: bool = True
    national_ids: bool = True
    pins: bool = True
    security_codes: bool = True
    ibans: bool = True
    passwords: bool = True
    dates_of_birth: bool = True


class VadSettings(Section):
    engine: Literal["silero", "webrtc"] = "silero"
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    webrtc_aggressiveness: int = Field(2, ge=0, le=3)


class EndpointSettings(Section):
    end_of_turn_ms: int = Field(600, ge=100)
    min_speech_ms: int = Field(200, ge=0)
    max_utterance_seconds: float = Field(20.0, gt=0)
    no_input_seconds: float = Field(6.0, gt=0)
    barge_in: bool = True
    barge_in_min_ms: int = Field(120, ge=0)
    pre_roll_ms: int = Field(300, ge=0, le=1000)
    speculative_ms: int = Field(120, ge=0)
    early_end: bool = True
    complete_end_ms: int = Field(250, ge=20)
    range_end_ms: int = Field(400, ge=20)
    sentence_end_ms: int = Field(320, ge=20)
    hold_ms: int = Field(1000, ge=100, le=5000)
    backchannels: bool = True
    backchannel_max_ms: int = Field(900, ge=100, le=3000)


class AsrSettings(Section):
    open_engine: Literal["whisper", "vosk", "pocketsphinx"] = "whisper"
    closed_engine: Literal["pocketsphinx", "vosk", "whisper"] = "pocketsphinx"
    whisper_model_dir: str = "models/whisper-base"
    whisper_window_seconds: float = Field(10.0, gt=0, le=30)
    whisper_beam_size: int = Field(1, ge=1)
    cross_check: bool = True
    cross_check_wait_ms: int = Field(300, ge=0, le=10000)
    # ... and when the check still waits in Whisper's queue behind other calls' (a decode away)
    cross_check_busy_wait_ms: int = Field(0, ge=0, le=10000)
    # a digit string's check, busy or not: the grammar hears few order numbers right (bench.asr)
    cross_check_digits_wait_ms: int = Field(3000, ge=0, le=30000)
    workers: int = Field(0, ge=0)
    closed_workers: int = Field(0, ge=0, le=16)  # closed-set stream/decoder processes; 0 = one per core
    closed_streaming: bool = True  # pocketsphinx decodes closed-set turns while the caller speaks
    vosk_model_dir: str = ""
    language: str = "en"


class TtsSettings(Section):
    engine: Literal["hibari", "espeak"] = "hibari"
    voice: str = "heart"
    speed: float = Field(1.0, gt=0.2, le=3.0)
    cache_dir: str = "prompt-cache"
    prompts_dir: str = ""
    presynthesize: bool = True


class AmdSettings(Section):
    enabled: bool = True
    bias: float = Field(0.0, ge=-1.0, le=1.0)
    max_seconds: float = Field(3.0, ge=1.0, le=10.0)


class VoiceSettings(Section):
    sample_rate: Literal[8000, 16000] = 8000
    max_calls: int = Field(0, ge=0)  # 0: CALLS_PER_CORE per usable core (gateway/voice/pipeline.py)
    vad: VadSettings = VadSettings()
    endpoint: EndpointSettings = EndpointSettings()
    asr: AsrSettings = AsrSettings()
    tts: TtsSettings = TtsSettings()
    amd: AmdSettings = AmdSettings()


class AudioSocketSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9092, ge=0, le=65535)
    read_timeout_seconds: float = Field(5.0, gt=0)
    max_payload_bytes: int = Field(4096, gt=0)
    max_sessions: int = Field(50, ge=1)


class FastAgiSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(4573, ge=0, le=65535)
    audiosocket_address: str = "127.0.0.1:9092"
    read_timeout_seconds: float = Field(10.0, gt=0)
    command_timeout_seconds: float = Field(120.0, gt=0)
    prompts_dir: str = "agi-prompts"
    asterisk_prompts_dir: str = ""
    max_sessions: int = Field(100, ge=1)


class AmiSettings(Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(5038, ge=0, le=65535)
    username: str = "gateway"
    secret: str = ""
    agent_context: str = "voicegw-agents"
    outbound_context: str = "voicegw-outbound"
    outbound_channel: str = "PJSIP/{number}@trunk"
    reconnect_max_seconds: float = Field(30.0, ge=1)


class AriSettings(Section):
    enabled: bool = False
    url: str = "http://127.0.0.1:8088"
    username: str = "gateway"
    password: str = ""
    app: str = "voicegw"
    media_host: str = "127.0.0.1"
    max_sessions: int = Field(50, ge=1)


class AsteriskSettings(Section):
    queue_languages: tuple[str, ...] = ("es",)

    @field_validator("queue_languages")
    @classmethod
    def _languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for language in value:
            if not language.replace("_", "").isalnum() or len(language) > 16:
                raise ValueError(f"{language!r} is not a language code (like es or pt_BR)")
        return value


class FreeSwitchSettings(Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8084, ge=0, le=65535)
    audio_host: str = "127.0.0.1"
    audio_port: int = Field(8085, ge=0, le=65535)
    audio_url: str = ""
    sample_rate: Literal[8000, 16000] = 8000
    agent_context: str = "voicegw-agents"
    conversation_variable: str = "voicegw_conversation_id"
    read_timeout_seconds: float = Field(5.0, gt=0)
    command_timeout_seconds: float = Field(10.0, gt=0)
    max_sessions: int = Field(50, ge=1)
    originate_enabled: bool = False
    esl_host: str = "127.0.0.1"
    esl_port: int = Field(8021, ge=1, le=65535)
    esl_password: str = "ClueCon"
    dial_string: str = "sofia/gateway/carrier/{number}"
    caller_id_number: str = ""
    outbound_socket: str = ""
    originate_timeout_seconds: int = Field(30, ge=5, le=300)
    max_ringing: int = Field(20, ge=1)
    connect_timeout_seconds: float = Field(5.0, gt=0)
    reconnect_max_seconds: float = Field(30.0, ge=1)


class TwilioMediaSettings(Section):
    enabled: bool = True
    path: str = "/media/twilio"
    voice_path: str = "/twilio/voice"
    parameters_ttl_seconds: float = Field(60.0, gt=0)
    max_message_bytes: int = Field(65536, gt=0)
    start_timeout_seconds: float = Field(10.0, gt=0)
    read_timeout_seconds: float = Field(5.0, gt=0)
    max_streams: int = Field(200, ge=1)
    max_queued_frames: int = Field(250, ge=1)
    max_pending_frames: int = Field(800, ge=1)
    transfer_numbers: dict[str, str] = Field(default_factory=dict)


class SipSettings(Section):
    enabled: bool = False
    mode: Literal["register", "trunk"] = "trunk"
    host: str = "127.0.0.1"
    port: int = Field(5060, ge=0, le=65535)
    transports: tuple[Literal["udp", "tcp", "tls"], ...] = ("udp",)
    registrar: str = ""
    username: str = ""
    password: str = ""
    domain: str = ""
    register_seconds: int = Field(300, ge=30)
    peers: tuple[str, ...] = ()
    transfer_uri: str = ""
    conversation_header: str = "X-Conversation-ID"
    max_calls: int = Field(32, ge=1)
    workers: int = Field(0, ge=0, le=64)
    codecs: tuple[Literal["G722", "PCMU", "PCMA"], ...] = ("G722", "PCMU", "PCMA")
    outbound_uri: str = ""
    rtp_port: int = Field(0, ge=0, le=65535)
    tls_cert_file: str = ""
    tls_key_file: str = ""
    answer_delay_ms: int = Field(0, ge=0, le=60000)
    # flood limits of the SIP front (sip.workers > 0): see gateway/telephony/sip/front.py
    max_new_calls_per_second: float = Field(20.0, ge=0)
    source_calls_per_second: float = Field(5.0, ge=0)
    # RTP inactivity: a confirmed call that receives no RTP this long is hung up (0 = off);
    # see gateway/telephony/sip/rtp_watch.py
    rtp_timeout_seconds: float = Field(30.0, ge=0)
    rtp_hold_timeout_seconds: float = Field(600.0, ge=0)


class TwilioSettings(Section):
    account_sid: str = ""
    auth_token: str = ""
    from_number: str = ""
    api_base_url: str = ""


class LinkSettings(Section):
    secret: str = ""
    ttl_minutes: float = Field(60.0, gt=0)


class ChatSettings(Section):
    max_message_chars: int = Field(2000, gt=0)
    messages_per_minute: int = Field(30, gt=0)
    ip_messages_per_minute: int = Field(300, gt=0)
    ip_new_chats_per_minute: int = Field(60, gt=0)
    max_sessions: int = Field(1000, ge=1)
    ip_max_sessions: int = Field(100, ge=1)


class AgentAccountSettings(Section):
    """One desktop account (``voicegw agents add NAME ... --print-config`` prints the entry)."""

    role: Literal["agent", "supervisor", "admin"] = "agent"
    queues: tuple[str, ...] = ()
    token_hash: str = ""
    interfaces: tuple[str, ...] = ()


class AgentSettings(Section):
    # plain-text {token: agent_id}, kept for old configurations; values are checked by
    # gateway.agents.accounts so that no error message ever repeats a token
    tokens: dict[Any, Any] = Field(default_factory=dict)
    accounts: dict[str, AgentAccountSettings] = Field(default_factory=dict)
    accounts_file: str = "agents.json"
    session_hours: float = Field(12.0, gt=0, le=720)
    signin_failures_per_address: int = Field(20, ge=1)
    signin_address_window_seconds: float = Field(600.0, gt=0)
    signin_failures_per_account: int = Field(50, ge=1)
    signin_account_pause_seconds: float = Field(60.0, gt=0)
    # the human side (gateway/agents/queue.py, dispatch.py, live.py)
    offer_seconds: float = Field(20.0, gt=0, le=600)
    reconnect_grace_seconds: float = Field(30.0, gt=0, le=3600)
    max_chats: int = Field(3, ge=1, le=50)
    dispositions: tuple[str, ...] = ("resolved", "follow_up", "callback", "escalated", "no_response")
    live_minutes: float = Field(60.0, gt=0)
    dispatch_seconds: float = Field(1.0, gt=0, le=60)


class TrustSettings(Section):
    verified_minutes: float = Field(30.0, gt=0)
    resume_on_caller_id: bool = True
    stir_shaken: Literal["claim", "possession"] = "claim"
    max_failed_checks: int = Field(5, ge=1)
    failed_checks_window_minutes: float = Field(60.0, gt=0)
    lockout_minutes: float = Field(30.0, gt=0)
    code_minutes: float = Field(10.0, gt=0)
    code_attempts: int = Field(3, ge=1)
    offer_minutes: float = Field(10.0, gt=0)


class OutboundSettings(Section):
    allow_prefixes: tuple[str, ...] = ()
    deny_prefixes: tuple[str, ...] = ("+1900", "+4487", "+449", "+4470", "+338", "+49900", "+49137",
                                      "+61190", "+979", "+881", "+882", "+883")
    calls_per_conversation_per_hour: int = Field(3, ge=0)
    sms_per_conversation_per_hour: int = Field(6, ge=0)
    calls_per_minute: int = Field(30, ge=0)
    sms_per_minute: int = Field(120, ge=0)


class OutreachSettings(Section):
    enabled: bool = True
    escalate_after_minutes: float = Field(30.0, gt=0)
    poll_seconds: float = Field(30.0, gt=0)
    horizon_hours: float = Field(24.0, gt=0)


class AnalyticsSettings(Section):
    idle_minutes: float = Field(30.0, gt=0)
    repeat_contact_days: float = Field(7.0, gt=0)
    max_conversations: int = Field(20000, ge=1, le=100000)
    low_confidence: float = Field(0.6, ge=0.0, le=1.0)


class QaSettings(Section):
    scorecards_dir: str = "config/scorecards"
    sweep_seconds: float = Field(60.0, gt=0)


class RetentionSettings(Section):
    enabled: bool = True
    run_minutes: float = Field(60.0, gt=0)
    conversations_days: float = Field(365.0, ge=0)
    transcripts_days: float = Field(90.0, ge=0)
    slots_days: float = Field(30.0, ge=0)
    sms_days: float = Field(30.0, ge=0)
    audit_days: float = Field(400.0, ge=0)
    delivery_days: float = Field(14.0, ge=0)
    recordings_days: float = Field(30.0, ge=0)


class RecordingSettings(Section):
    enabled: bool = False
    channels: tuple[str, ...] = ("voice",)
    journeys: tuple[str, ...] = ()


class WebhookSettings(Section):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str = Field(min_length=1)
    secret: str = Field(min_length=16)
    kinds: tuple[str, ...] = ()

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("a webhook url starts with http:// or https://")
        return value


class EventsOutSettings(Section):
    webhooks: tuple[WebhookSettings, ...] = ()
    redis_stream_max_len: int = Field(100000, ge=0)
    timeout_seconds: float = Field(5.0, gt=0)
    max_attempts: int = Field(20, ge=1)
    backoff_base_seconds: float = Field(1.0, gt=0)
    backoff_max_seconds: float = Field(300.0, gt=0)
    batch: int = Field(100, ge=1, le=1000)
    poll_seconds: float = Field(0.5, gt=0)

    @field_validator("webhooks")
    @classmethod
    def _unique(cls, value: tuple[WebhookSettings, ...]) -> tuple[WebhookSettings, ...]:
        names = [w.name for w in value]
        if len(set(names)) != len(names):
            raise ValueError("webhook names must be unique")
        return value


class ComplianceSettings(Section):
    organisation: str = Field("Example Services", min_length=1, max_length=80)
    opt_out_key: Literal["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "*"] = "9"


_CLOCK_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class CampaignSettings(Section):
    enabled: bool = True
    poll_seconds: float = Field(5.0, gt=0)
    lease_seconds: float = Field(30.0, ge=5)
    calls_per_minute: int = Field(10, ge=1, le=600)
    max_concurrent: int = Field(5, ge=1, le=500)
    timezone: str = "UTC"
    quiet_start: str = Field("21:00", pattern=_CLOCK_TIME)
    quiet_end: str = Field("08:00", pattern=_CLOCK_TIME)
    max_attempts: int = Field(4, ge=1, le=20)
    retry_minutes: float = Field(30.0, gt=0)
    retry_backoff: float = Field(2.0, ge=1.0, le=10.0)
    max_retry_minutes: float = Field(24 * 60.0, gt=0)
    sms_first: bool = True
    escalate_after_minutes: float = Field(30.0, gt=0)
    call_outcome_minutes: float = Field(5.0, gt=0)
    max_call_minutes: float = Field(60.0, gt=0)
    max_contacts: int = Field(100_000, ge=1)
    max_campaigns: int = Field(1000, ge=1)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Paris)") from None
        return value


class Settings(Section):
    data_dir: str = "data"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    web: WebSettings = WebSettings()
    context: ContextSettings = ContextSettings()
    nlu: NluSettings = NluSettings()
    journeys: JourneySettings = JourneySettings()
    crm: CrmSettings = CrmSettings()
    rasa: RasaSettings = RasaSettings()
    redaction: RedactionSettings = RedactionSettings()
    voice: VoiceSettings = VoiceSettings()
    audiosocket: AudioSocketSettings = AudioSocketSettings()
    fastagi: FastAgiSettings = FastAgiSettings()
    ami: AmiSettings = AmiSettings()
    ari: AriSettings = AriSettings()
    asterisk: AsteriskSettings = AsteriskSettings()
    sip: SipSettings = SipSettings()
    freeswitch: FreeSwitchSettings = FreeSwitchSettings()
    twilio: TwilioSettings = TwilioSettings()
    twilio_media: TwilioMediaSettings = TwilioMediaSettings()
    links: LinkSettings = LinkSettings()
    chat: ChatSettings = ChatSettings()
    agents: AgentSettings = AgentSettings()
    outreach: OutreachSettings = OutreachSettings()
    trust: TrustSettings = TrustSettings()
    outbound: OutboundSettings = OutboundSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    qa: QaSettings = QaSettings()
    retention: RetentionSettings = RetentionSettings()
    recordings: RecordingSettings = RecordingSettings()
    events_out: EventsOutSettings = EventsOutSettings()
    compliance: ComplianceSettings = ComplianceSettings()
    campaigns: CampaignSettings = CampaignSettings()

    def data_path(self, name: str) -> Path:
        """A path inside the data directory (absolute paths are kept as given)."""
        path = Path(name)
        if path.is_absolute():
            return path
        base = Path(self.data_dir)
        if not base.is_absolute():
            base = Path.cwd() / base
        return base / path

    def project_path(self, name: str) -> Path:
        """A path relative to the project (for shipped files such as journeys and models)."""
        path = Path(name)
        if path.is_absolute() or path.exists():
            return path
        return PACKAGE_ROOT / path


class ConfigError(ValueError):
    """A configuration value is missing, malformed or of the wrong type."""


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__") if k]
        if not keys:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return out


def _describe(error: dict[str, Any], data: dict[str, Any]) -> str:
    loc = [str(p) for p in error.get("loc", ())]
    key = ".".join(loc)
    value: Any = data
    for part in loc:
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            value = "<missing>"
            break
    if error.get("type") == "extra_forbidden":
        return f"unknown key {key!r} (value {value!r}): not a gateway setting; check the spelling"
    return f"bad value for {key!r}: {value!r}: {error.get('msg', 'invalid')}"


def load_settings(
    config_file: str | Path | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Load defaults, then ``config_file``, then ``VOICEGW_*`` variables, then ``overrides``."""
    data = _read_yaml(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else {}
    if config_file:
        data = _merge(data, _read_yaml(Path(config_file)))
    data = _merge(data, _env_overrides(dict(os.environ if environ is None else environ)))
    if overrides:
        data = _merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e, data) for e in exc.errors())
        raise ConfigError(f"configuration error: {problems}") from None
