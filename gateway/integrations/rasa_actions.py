"""The gateway's integrations offered to Rasa assistants as a rasa-sdk action server.

The actions are ordinary ``rasa_sdk.Action`` subclasses executed by rasa-sdk's own
``ActionExecutor``; the HTTP endpoint around it is a small aiohttp app (``POST /webhook``,
``GET /health``, ``GET /actions``) that runs inside the gateway's event loop, answering exactly
as rasa-sdk's own endpoint does (status codes 400 / 404 / 449 with ``{"error", "action_name"}``).
The slots each action reads and sets are listed in ``gateway/integrations/README.md``.

The same actions also load into rasa-sdk's own server, for teams that run one already::

    python -m rasa_sdk --actions gateway.integrations.rasa_actions
"""

from __future__ import annotations

import json
import logging
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date
from typing import Any, Awaitable, Callable

from aiohttp import web
from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import ActionExecutor, CollectingDispatcher
from rasa_sdk.interfaces import ActionExecutionRejection, ActionMissingDomainException, ActionNotFoundException

from gateway.config import Settings, load_settings
from gateway.integrations.crm import Crm, CrmError, CrmTimeout, open_crm

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1_048_576  # a tracker with a long history is well below this
APOLOGY = "I'm sorry, I can't reach our systems right now."

FollowUpHook = Callable[[str, str, str, str], Awaitable[None]]
"""``(sender_id, channel, template, customer_id)``: queue a follow-up message."""
TransferHook = Callable[[str, str, str], Awaitable[None]]
"""``(sender_id, queue, reason)``: hand the conversation to an agent queue."""


@dataclass
class ActionHooks:
    """Optional callbacks through which actions reach the gateway's channels."""

    follow_up: FollowUpHook | None = None
    transfer: TransferHook | None = None


_shared: dict[str, Any] = {}


def _default_crm() -> tuple[Crm, Settings]:
    """The CRM and settings of a stand-alone action server (``python -m rasa_sdk --actions
    gateway.integrations.rasa_actions``): from ``config/gateway.yaml`` and ``VOICEGW_*``."""
    if "crm" not in _shared:
        settings = load_settings()
        _shared["settings"], _shared["crm"] = settings, open_crm(settings)
    return _shared["crm"], _shared["settings"]


class GatewayAction(Action, ABC):
    """Base of the gateway's actions: CRM failures become an apology and ``outcome=error``.

    Built with a CRM inside the gateway; built without arguments (as rasa-sdk's own server
    does when it loads this module) it opens the CRM the gateway's settings name."""

    action_name = ""

    def __init__(self, crm: Crm | None = None, settings: Settings | None = None,
                 hooks: ActionHooks | None = None) -> None:
        # opened lazily: rasa-sdk pickles its actions into its worker process before they run
        self._crm = crm
        self._settings = settings
        self.hooks = hooks or ActionHooks()

    @property
    def crm(self) -> Crm:
        if self._crm is None:
            self._crm, default_settings = _default_crm()
            self._settings = self._settings or default_settings
        return self._crm

    @property
    def settings(self) -> Settings | None:
        if self._settings is None and self._crm is None:
            self._crm, self._settings = _default_crm()
        return self._settings

    def name(self) -> str:
        return self.action_name

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            return await self.act(dispatcher, tracker)
        except (CrmTimeout, CrmError) as exc:
            log.warning("rasa action %s for %s: %s", self.action_name, tracker.sender_id, exc)
            dispatcher.utter_message(text=APOLOGY)
            return [SlotSet("outcome", "error")]

    @abstractmethod
    async def act(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> list[dict[str, Any]]:
        """The action itself; CRM errors raised here are turned into an apology."""


def _slot(tracker: Tracker, name: str) -> str:
    value = tracker.get_slot(name)
    return "" if value is None else str(value).strip()


class LookupCustomer(GatewayAction):
    action_name = "action_lookup_customer"

    async def act(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> list[dict[str, Any]]:
        customer_id = _slot(tracker, "customer_id")
        if customer_id:
            customer = await self.crm.get_customer(customer_id)
        else:
            customer = await self.crm.find_customer_by_phone(_slot(tracker, "phone") or tracker.sender_id)
        if customer is None:
            return [SlotSet("outcome", "unknown")]
        return [SlotSet("customer_id", customer.id), SlotSet("customer_name", customer.name),
                SlotSet("outcome", "known")]


class VerifyIdentity(GatewayAction):
    action_name = "action_verify_identity"

    async def act(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> list[dict[str, Any]]:
        dob_text = _slot(tracker, "date_of_birth")
        try:
            dob = date.fromisoformat(dob_text) if dob_text else None
        except ValueError:
            dob = None
        customer = await self.crm.verify_identity(_slot(tracker, "account_number"), date_of_birth=dob,
                                                  pin=_slot(tracker, "pin") or None)
        clear = [SlotSet("pin", None)]  # never keep the secret in the assistant's tracker
        if customer is None:
            dispatcher.utter_message(text="Sorry, those details don't match our records.")
            return clear + [SlotSet("verified", False), SlotSet("outcome", "failed")]
        return clear + [SlotSet("verified", True), SlotSet("customer_id", customer.id),
                        SlotSet("customer_name", customer.name), SlotSet("outcome", "verified")]


class OrderStatus(GatewayAction):
    action_name = "action_order_status"

    async def act(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> list[dict[str, Any]]:
        order_id, customer_id = _slot(tracker, "order_id"), _slot(tracker, "customer_id")
        order = None
        if order_id:
            order = await self.crm.order(order_id)
            if order is not None and customer_id and order.customer_id != customer_id:
                order = None  # not this customer's order: say nothing about it
        elif customer_id:
            open_orders = [o for o in await self.crm.orders(customer_id) if o.status not in ("delivered", "cancelled")]
            order = open_orders[0] if len(open_orders) == 1 else None
        if order is None:
            dispatcher.utter_message(text="I couldn't find that order.")
            return [SlotSet("outcome", "not_found")]
        eta = order.eta.isoformat() if order.eta else None
        text = f"Order {order.id} ({order.item}) is {order.status}"
        text += f", expected on {eta}." if eta and order.status != "delivered" else "."
        dispatcher.utter_message(text=text)
        return [SlotSet("order_id", order.id), SlotSet("order_status", order.status), SlotSet("order_eta", eta),
                SlotSet("order_carrier", order.carrier), SlotSet("order_tracking", order.tracking),
                SlotSet("outcome", "found")]


class OpenDispute(GatewayAction):
    action_name = "action_open_dispute"

    async def act(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> list[dict[str, Any]]:
        invoice_id, customer_id = _slot(tracker, "invoice_id"), _slot(tracker, "customer_id")
        if not invoice_id and customer_id:
            invoices = await self.crm.invoices(customer_id)
            invoice_id = invoices[0].id if invoices else ""
        if not invoice_id:
            dispatcher.utter_message(text="I couldn't find a bill to dispute.")
            return [SlotSet("outcome", "not_found")]
        try:
            case = await self.crm.open_dispute(invoice_id, _slot(tracker, "dispute_reason") or "billing dispute")
        except CrmError as exc:
            if "no invoice" not in str(exc):
                raise
            dispatcher.utter_message(text="I couldn't find a bill to dispute.")
            return [SlotSet("outcome", "not_found")]
        dispatcher.utter_message(text=f"I've opened dispute case {case}.")
        return [SlotSet("invoice_id", invoice_id), SlotSet("case_number", case), SlotSet("outcome", "opened")]


class SendFollowUp(GatewayAction):
    action_name = "action_send_follow_up"

    async def act(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> list[dict[str, Any]]:
        channel = _slot(tracker, "follow_up_channel") or "sms"
        template = _slot(tracker, "follow_up_template") or "generic"
        customer_id = _slot(tracker, "customer_id")
        if self.hooks.follow_up is not None:
            await self.hooks.follow_up(tracker.sender_id, channel, template, customer_id)
        dispatcher.utter_message(json_message={"gateway_action": "send_follow_up", "channel": channel,
                                               "template": template, "customer_id": customer_id})
        return [SlotSet("follow_up_requested", template), SlotSet("outcome", "requested")]


class TransferToAgent(GatewayAction):
    action_name = "action_transfer_to_agent"

    async def act(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> list[dict[str, Any]]:
        default_queue = self.settings.journeys.agent_queue if self.settings else "support"
        queue = _slot(tracker, "agent_queue") or default_queue
        reason = _slot(tracker, "transfer_reason") or "customer asked for an agent"
        if self.hooks.transfer is not None:
            await self.hooks.transfer(tracker.sender_id, queue, reason)
        dispatcher.utter_message(text="I'm connecting you with a colleague now.",
                                 json_message={"gateway_action": "transfer", "queue": queue, "reason": reason})
        return [SlotSet("handoff_queue", queue), SlotSet("outcome", "transfer")]


ACTIONS: tuple[type[GatewayAction], ...] = (
    LookupCustomer, VerifyIdentity, OrderStatus, OpenDispute, SendFollowUp, TransferToAgent,
)


def build_executor(crm: Crm, settings: Settings | None = None, hooks: ActionHooks | None = None) -> ActionExecutor:
    """A rasa-sdk executor with the gateway's actions registered."""
    executor = ActionExecutor()
    for action in ACTIONS:
        executor.register_action(action(crm, settings, hooks))
    return executor


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, default=str))


def create_app(executor: ActionExecutor) -> web.Application:
    """The aiohttp app serving ``executor`` the way rasa-sdk's endpoint does."""

    async def health(_: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def actions(_: web.Request) -> web.Response:
        return _json([a.model_dump() for a in executor.list_actions()])

    async def webhook(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            # aiohttp already inflates deflate bodies itself; inflate only what is still compressed
            if request.headers.get("Content-Encoding") == "deflate" and not raw.lstrip().startswith(b"{"):
                inflater = zlib.decompressobj()
                raw = inflater.decompress(raw, MAX_REQUEST_BYTES)
                if inflater.unconsumed_tail:
                    return _json({"error": "request body too large"}, 413)
            action_call = json.loads(raw)
        except (ValueError, zlib.error):
            return _json({"error": "Invalid body request"}, 400)
        if not isinstance(action_call, dict) or not isinstance(action_call.get("tracker", {}), dict):
            return _json({"error": "Invalid body request"}, 400)
        name = action_call.get("next_action")
        if name and "tracker" not in action_call:
            return _json({"error": "the request has no tracker", "action_name": name}, 400)
        try:
            result = await executor.run(action_call)
        except ActionExecutionRejection as exc:
            return _json({"error": exc.message, "action_name": exc.action_name}, 400)
        except ActionNotFoundException as exc:
            log.warning("rasa action server: %s", exc)
            return _json({"error": exc.message, "action_name": exc.action_name}, 404)
        except ActionMissingDomainException as exc:
            return _json({"error": exc.message, "action_name": exc.action_name}, 449)
        except Exception as exc:  # an action's own bug: one failed request, never the server
            log.exception("rasa action %s failed", name)
            return _json({"error": str(exc) or type(exc).__name__, "action_name": name}, 500)
        return _json(result.model_dump() if result else None)

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_get("/health", health)
    app.router.add_get("/actions", actions)
    app.router.add_post("/webhook", webhook)
    return app


class ActionServer:
    """A running action server: ``port`` it listens on, ``close()`` to stop it."""

    def __init__(self, runner: web.AppRunner) -> None:
        self.runner = runner

    @property
    def port(self) -> int:
        return int(self.runner.addresses[0][1])

    async def close(self) -> None:
        await self.runner.cleanup()

    cleanup = close


async def start_action_server(
    settings: Settings, crm: Crm, host: str, port: int, *, hooks: ActionHooks | None = None
) -> ActionServer:
    """Serve the gateway's actions on ``host:port`` (port 0 picks a free one: see ``.port``)."""
    runner = web.AppRunner(create_app(build_executor(crm, settings, hooks)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    server = ActionServer(runner)
    log.info("rasa action server listening on %s:%d", host, server.port)
    return server
