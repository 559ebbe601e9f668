"""``voicegw doctor``'s Asterisk checks: the AMI and ARI logins, and every journey queue.

* AMI (``ami.enabled``): log in with the ``ami.*`` settings and read the PBX version; a PBX
  that cannot be reached is told apart from a refused login (Asterisk answers a bad secret
  after 1 s and closes).
* Queues: ``QueueStatus`` over that login lists the queues Asterisk has (one ``QueueParams``
  event each, then ``QueueStatusComplete``); every queue a journey can transfer to
  (:func:`gateway.telephony.asterisk_queues.queue_plan`) must be among them, the default queue
  above all (the dialplan falls back to it). ``<queue>-<language>`` variants are optional.
* ARI (``ari.enabled``): ``GET /ari/asterisk/info`` with the ``ari.*`` credentials (401 is a
  refused password; anything else that is not 200 is reported with its status).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from gateway.config import Settings
from gateway.doctor import Check
from gateway.telephony.asterisk_queues import QueuePlan

LOGIN_TIMEOUT = 5.0
"""Seconds for the AMI login (a refused login alone takes Asterisk 1 s to answer)."""
ARI_TIMEOUT = 5.0
"""Seconds for the ARI request."""
QUEUES_FIX = ("voicegw asterisk-dialplan --queues > /etc/asterisk/queues_voicegw.conf, "
              "#include it in queues.conf, add members, then: asterisk -rx \"queue reload all\"")


async def ami_checks(settings: Settings, plan: QueuePlan | None, timeout: float = LOGIN_TIMEOUT) -> list[Check]:
    """The AMI login and, over it, the queues of ``plan`` (None: the journeys could not be read)."""
    from gateway.telephony.ami import AmiClient, AmiError

    cfg = settings.ami
    where = f"{cfg.host}:{cfg.port} as {cfg.username!r}"
    client = AmiClient(settings, initial_backoff=timeout)
    try:
        await client.start(wait=timeout)
        if not client.connected:
            if client.connect_failures:
                return [Check("AMI login", False, f"{cfg.host}:{cfg.port} unreachable",
                              "is Asterisk running, manager.conf enabled and bound to an address this host reaches?")]
            return [Check("AMI login", False, f"refused or unanswered for {where} within {timeout:.0f} s",
                          "check ami.username/ami.secret against manager.conf and its permit= line")]
        try:
            info = await client.action({"Action": "CoreSettings"})
            version = info.get("AsteriskVersion", "?") if info.success else "version not readable"
        except AmiError as exc:
            version = str(exc)
        out = [Check("AMI login", True, f"logged in to {where} (Asterisk {version})")]
        if plan is not None:
            out += await _queue_checks(client, plan)
        return out
    finally:
        await client.close()


async def _queue_checks(client: Any, plan: QueuePlan) -> list[Check]:
    from gateway.telephony.ami import AmiError

    try:
        result = await client.action({"Action": "QueueStatus"})
    except AmiError as exc:
        return [Check("Asterisk queues", False, f"QueueStatus failed: {exc}", QUEUES_FIX)]
    messages = result if isinstance(result, list) else [result]
    if not messages or not messages[0].success:
        message = messages[0].get("Message", "") if messages else "no answer"
        return [Check("Asterisk queues", False, f"QueueStatus refused: {message}",
                      "give the AMI user read access (manager.conf read=...)")]
    present = {str(m.get("Queue", "")) for m in messages if m.get("Event") == "QueueParams"}
    out = []
    for queue in plan.queues:
        users = ", ".join(plan.used_by.get(queue, ()))
        role = " (the default queue: every fallback lands here)" if queue == plan.default else ""
        if queue in present:
            out.append(Check(f"Asterisk queue {queue}", True, f"exists{role}; used by {users}"))
        else:
            fallback = "callers are hung up on" if queue == plan.default else \
                f"its transfers fall back to {plan.default!r}"
            out.append(Check(f"Asterisk queue {queue}", False, f"missing{role}: {fallback}; used by {users}",
                             QUEUES_FIX))
    variants = plan.variants
    if variants:
        have = [v for v in variants if v in present]
        missing = [v for v in variants if v not in present]
        detail = f"{len(have)} of {len(variants)} present" + (f"; missing: {', '.join(missing)}" if missing else "")
        out.append(Check("Asterisk language queues", not missing, detail,
                         "optional: without them callers of that language go to the plain queue; " + QUEUES_FIX,
                         required=False))
    return out


async def ari_check(settings: Settings, timeout: float = ARI_TIMEOUT) -> Check:
    """Log in to ARI with the Stasis app's own REST client and read the version."""
    from gateway.telephony.ari import AriError, AriRest

    cfg = settings.ari
    rest = AriRest(cfg.url, cfg.username, cfg.password, timeout=timeout)
    try:
        info = await rest.request("GET", "/asterisk/info")
    except AriError as exc:
        if exc.status == 401:
            return Check("ARI login", False, f"{cfg.url} refused user {cfg.username!r} (401)",
                         "check ari.username/ari.password against ari.conf")
        return Check("ARI login", False, f"{cfg.url}/ari/asterisk/info answered {exc}",
                     "is res_ari loaded (module show like ari)?")
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return Check("ARI login", False, f"{cfg.url} unreachable: {exc or type(exc).__name__}",
                     "is http.conf enabled (and res_ari loaded), and ari.url right?")
    finally:
        await rest.close()
    system = info.get("system", {}) if isinstance(info, dict) else {}
    return Check("ARI login", True, f"logged in to {cfg.url} as {cfg.username!r} "
                                    f"(Asterisk {system.get('version', '?')})")
