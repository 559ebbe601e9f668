"""How ``settings.sip`` becomes pjsua2 configuration: codec priorities, transports, account.

Called on the runtime thread while the endpoint starts; plain functions of the settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pjsua2 as pj

from gateway.telephony.sip.call import uri_host
from gateway.telephony.sip.runtime import SipError

if TYPE_CHECKING:
    from gateway.config import SipSettings

TRANSPORT_TYPES = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP, "tls": pj.PJSIP_TRANSPORT_TLS}


def _bound(host: str) -> bool:
    return host not in ("", "0.0.0.0")


def set_codec_priorities(ep: pj.Endpoint, codecs: tuple[str, ...]) -> None:
    """Enable exactly ``codecs`` (names such as G722, PCMU), preferred first; others are off."""
    wanted = [c.upper() for c in codecs]
    for info in ep.codecEnum2():
        name = info.codecId.split("/")[0].upper()
        ep.codecSetPriority(info.codecId, 255 - wanted.index(name) if name in wanted else 0)


def create_transports(ep: pj.Endpoint, s: SipSettings) -> dict[str, tuple[int, int]]:
    """Create the configured transports; returns ``{name: (transport id, bound port)}``.

    UDP and TCP share ``s.port`` (the first ephemeral port when it is 0); TLS listens on the
    next port up."""
    out: dict[str, tuple[int, int]] = {}
    port = s.port
    for name in s.transports:
        cfg = pj.TransportConfig()
        cfg.port = port + 1 if name == "tls" and port else port
        if _bound(s.host):
            cfg.boundAddress = s.host
            cfg.publicAddress = s.host
        if name == "tls":
            cfg.tlsConfig.certFile = s.tls_cert_file
            cfg.tlsConfig.privKeyFile = s.tls_key_file
            cfg.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
        tid = ep.transportCreate(TRANSPORT_TYPES[name], cfg)
        bound = int(ep.transportGetInfo(tid).localName.rsplit(":", 1)[1])
        out[name] = (tid, bound)
        if not port:
            port = bound
    return out


def account_config(s: SipSettings, sip_port: int, *, register: bool = True, contact: str = "") -> pj.AccountConfig:
    """The account: registration with digest credentials (register mode) or a local identity
    that only receives calls (trunk mode); RTP on ``s.rtp_port`` upwards (any port when 0).

    Behind the SIP front (``front.py``) one worker registers, with ``contact`` (the front's
    address) as its Contact, and the others (``register=False``) keep the identity and the
    credentials for their calls without registering."""
    acfg = pj.AccountConfig()
    host = s.host if _bound(s.host) else "127.0.0.1"
    if s.mode == "register":
        if not s.registrar:
            raise SipError("sip.mode is register but sip.registrar is empty")
        domain = s.domain or uri_host(s.registrar).rsplit(":", 1)[0] or host
        acfg.idUri = f"sip:{s.username}@{domain}"
        if register:
            acfg.regConfig.registrarUri = s.registrar
        if contact:
            acfg.sipConfig.contactForced = contact
        acfg.regConfig.timeoutSec = s.register_seconds
        acfg.regConfig.retryIntervalSec = 30
        acfg.regConfig.firstRetryIntervalSec = 5
        # realm "*": answer the registrar's challenge whatever realm it names
        acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", s.username, 0, s.password))
    else:
        acfg.idUri = f"sip:gateway@{host}:{sip_port}"
    tc = acfg.mediaConfig.transportConfig
    tc.port = s.rtp_port
    tc.portRange = 10000 if s.rtp_port else 0
    if _bound(s.host):
        tc.boundAddress = s.host
        tc.publicAddress = s.host
    return acfg
