"""The pages behind follow-up links: ``GET /l/<token>`` shows, ``POST /l/<token>`` completes.

The page is prefilled from the conversation (``core.context``): the customer's name and what
the step needs. Three kinds of step, chosen by the link's purpose:

- ``upload``  (purpose mentions upload or document): one file, at most
  ``settings.web.max_request_bytes``, stored under ``<data_dir>/uploads/<conversation>/``;
- ``payment`` (purpose mentions pay): shows the amount and asks for a confirmation;
- ``info``    (purpose mentions track): shows what the conversation knows (an order's status);
- ``confirm`` (purpose mentions confirm or reset): a summary and a yes/no answer;
- ``form``    (anything else): a few fields prefilled from the conversation.

Opening sends ``LinkOpened`` to the conversation; completing sends ``FormSubmitted`` and uses the
token up. A forged, altered, expired or used link gets a clear refusal page (403 or 410) and a
log line with the token id.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from aiohttp import BodyPartReader, web

from gateway.config import Settings
from gateway.core.actions import Ask, Say
from gateway.core.events import FormSubmitted, LinkOpened
from gateway.core.port import ConversationPort
from gateway.links import LinkClaims, LinkRefused, LinkSigner
from gateway.pages import escape, page, refusal
from gateway.metrics import Metrics

log = logging.getLogger(__name__)

MAX_FIELDS = 20
MAX_FIELD_CHARS = 1000
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
FORM_FIELDS = (("name", "Full name"), ("email", "Email"), ("address", "Postal address"), ("note", "Anything to add"))


SUMMARY_SLOTS = (("order_id", "Order"), ("order_item", "Item"), ("order_status_text", "Status"),
                 ("order_tracking", "Tracking number"), ("appointment_kind", "Appointment"),
                 ("appointment_when", "When"), ("appointment_location", "Where"), ("case_id", "Case"))


def step_kind(purpose: str) -> str:
    """``upload``, ``payment``, ``info``, ``confirm`` or ``form`` for a link purpose."""
    p = purpose.lower()
    if "upload" in p or "document" in p:
        return "upload"
    if "pay" in p:
        return "payment"
    if "track" in p:
        return "info"
    if "confirm" in p or "reset" in p:
        return "confirm"
    return "form"


def _customer_name(ctx: dict[str, Any]) -> str:
    customer = ctx.get("customer") or {}
    return str(customer.get("name", "")) if isinstance(customer, dict) else ""


def _slots(ctx: dict[str, Any]) -> dict[str, Any]:
    slots = ctx.get("slots") or {}
    return slots if isinstance(slots, dict) else {}


class LinkPages:
    """aiohttp handlers for the follow-up link pages."""

    def __init__(self, settings: Settings, core: ConversationPort, signer: LinkSigner, metrics: Metrics) -> None:
        self._settings = settings
        self._core = core
        self._signer = signer
        self._metrics = metrics

    def _refused(self, request: web.Request, exc: LinkRefused) -> web.Response:
        self._metrics.inc("voicegw_links_refused_total", reason=exc.reason)
        log.warning("follow-up link refused (%s: %s) token %s from %s", exc.reason, exc.detail,
                    exc.token_id or "-", request.remote)
        messages = {
            "expired": "This link has expired. Please ask us for a new one.",
            "used": "This link was already used. Each link works once; please ask us for a new one if needed.",
            "forged": "This link is not valid. Please use the link exactly as we sent it.",
            "malformed": "This link is not valid. Please use the link exactly as we sent it.",
            "unavailable": "We cannot open this link right now. Please try again in a minute.",
        }
        return refusal("Link not accepted", messages.get(exc.reason, "This link cannot be used."), status=exc.status)

    async def _context(self, cid: str) -> dict[str, Any]:
        try:
            return dict(await self._core.context(cid))
        except LookupError:
            return {}

    async def show(self, request: web.Request) -> web.Response:
        """GET /l/{token}."""
        try:
            claims = self._signer.verify(request.match_info["token"])
        except LinkRefused as exc:
            return self._refused(request, exc)
        ctx = await self._context(claims.conversation_id)
        await self._core.handle(claims.conversation_id, LinkOpened(token_id=claims.token_id, purpose=claims.purpose))
        log.info("follow-up link %s opened (%s) conversation %s", claims.token_id, claims.purpose,
                 claims.conversation_id)
        return self._render(claims, ctx)

    def _render(self, claims: LinkClaims, ctx: dict[str, Any]) -> web.Response:
        kind = step_kind(claims.purpose)
        name = _customer_name(ctx)
        slots = _slots(ctx)
        hello = f"<p id=\"greeting\">Hello{(' ' + escape(name)) if name else ''}.</p>"
        if kind == "upload":
            limit_kb = self._settings.web.max_request_bytes // 1024
            needed = slots.get("loan_missing_text") or slots.get("documents_needed") or ""
            fields = (f"<p id=\"needed\">We still need: {escape(str(needed))}.</p>" if needed else "") + (
                      f"<label>Document (up to {limit_kb} KB)<input type=\"file\" name=\"document\" required></label>"
                      "<label>Note<input name=\"note\" maxlength=\"1000\"></label>")
            title, enctype, button = "Upload your document", "multipart/form-data", "Upload"
        elif kind == "payment":
            amount = slots.get("amount") or slots.get("balance") or ""
            fields = (f"<p>Amount: <strong id=\"amount\">{escape(str(amount))}</strong></p>"
                      f"<input type=\"hidden\" name=\"amount\" value=\"{escape(str(amount))}\">"
                      "<label><input type=\"checkbox\" name=\"confirmed\" value=\"yes\" required> "
                      "I confirm this payment</label>")
            title, enctype, button = "Confirm your payment", "application/x-www-form-urlencoded", "Confirm"
        elif kind in ("info", "confirm"):
            rows = "".join(f"<dt>{escape(label)}</dt><dd>{escape(str(slots[key]))}</dd>"
                           for key, label in SUMMARY_SLOTS if slots.get(key))
            fields = f"<dl id=\"summary\">{rows}</dl>" if rows else ""
            if kind == "info":
                fields += "<input type=\"hidden\" name=\"seen\" value=\"yes\">"
                title, button = "Your request", "Thanks, got it"
            else:
                question = ("Did you ask for a password reset?" if "reset" in claims.purpose.lower()
                            else "Can you confirm this?")
                fields += (f"<p>{escape(question)}</p><label><input type=\"radio\" name=\"answer\" value=\"yes\" "
                           "required> Yes</label><label><input type=\"radio\" name=\"answer\" value=\"no\"> No</label>")
                title, button = "Please confirm", "Send"
            enctype = "application/x-www-form-urlencoded"
        else:
            prefill = {"name": name, **{k: v for k, v in slots.items() if isinstance(v, (str, int, float))}}
            fields = "".join(
                f"<label>{escape(label)}<input name=\"{key}\" maxlength=\"{MAX_FIELD_CHARS}\" "
                f"value=\"{escape(str(prefill.get(key, '')))}\"></label>"
                for key, label in FORM_FIELDS
            )
            title, enctype, button = "Complete your details", "application/x-www-form-urlencoded", "Send"
        body = (f"{hello}<form method=\"post\" enctype=\"{enctype}\" id=\"step\">{fields}"
                f"<button type=\"submit\">{button}</button></form>")
        return page(title, body)

    async def submit(self, request: web.Request) -> web.Response:
        """POST /l/{token}: read the (bounded) submission, use up the token, tell the conversation."""
        token = request.match_info["token"]
        try:
            claims = self._signer.verify(token)
        except LinkRefused as exc:
            return self._refused(request, exc)
        try:
            fields, upload = await self._read_submission(request, step_kind(claims.purpose))
        except ValueError as exc:
            log.warning("follow-up link %s submission refused: %s", claims.token_id, exc)
            return refusal("Not accepted", str(exc), status=413 if "large" in str(exc) else 400)
        try:
            claims = self._signer.consume(token)
        except LinkRefused as exc:
            return self._refused(request, exc)
        if upload is not None:
            filename, data = upload
            fields.update(self._store_upload(claims, filename, data))
        actions = await self._core.handle(claims.conversation_id, FormSubmitted(purpose=claims.purpose, fields=fields))
        self._metrics.inc("voicegw_links_completed_total")
        log.info("follow-up link %s completed (%s) conversation %s", claims.token_id, claims.purpose,
                 claims.conversation_id)
        replies = "".join(f"<p class=\"reply\">{escape(a.text)}</p>" for a in actions if isinstance(a, (Say, Ask)))
        return page("Thank you", f"<p id=\"done\">Received. This is now part of your conversation with us.</p>{replies}")

    async def _read_submission(self, request: web.Request, kind: str) -> tuple[dict[str, Any], tuple[str, bytes] | None]:
        limit = self._settings.web.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ValueError(f"the upload is too large (limit {limit // 1024} KB)")
        fields: dict[str, Any] = {}
        upload: tuple[str, bytes] | None = None
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            total = 0
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or not part.name:
                    raise ValueError("nested or unnamed form parts are not accepted")
                data = bytearray()
                while chunk := await part.read_chunk(65536):
                    total += len(chunk)
                    if total > limit:
                        raise ValueError(f"the upload is too large (limit {limit // 1024} KB)")
                    data.extend(chunk)
                if part.filename is not None:
                    if upload is not None:
                        raise ValueError("one document per link")
                    upload = (part.filename, bytes(data))
                else:
                    self._add_field(fields, part.name, data.decode("utf-8", "replace"))
        else:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, str):
                    self._add_field(fields, key, value)
        if kind == "upload" and (upload is None or not upload[1]):
            raise ValueError("please choose a document to upload")
        if kind == "payment" and fields.get("confirmed") != "yes":
            raise ValueError("please tick the box to confirm the payment")
        if kind == "confirm" and fields.get("answer") not in ("yes", "no"):
            raise ValueError("please answer yes or no")
        return fields, upload

    @staticmethod
    def _add_field(fields: dict[str, Any], key: str, value: str) -> None:
        if len(fields) >= MAX_FIELDS:
            raise ValueError("too many fields")
        if len(value) > MAX_FIELD_CHARS or len(key) > 64:
            raise ValueError(f"a field is longer than {MAX_FIELD_CHARS} characters")
        fields[key] = value

    def _store_upload(self, claims: LinkClaims, filename: str, data: bytes) -> dict[str, Any]:
        safe_cid = SAFE_NAME.sub("_", claims.conversation_id)[:80] or "conversation"
        safe_name = SAFE_NAME.sub("_", filename)[-100:].lstrip(".") or "document"
        folder = self._settings.data_path("uploads") / safe_cid
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{claims.nonce}-{safe_name}"
        path.write_bytes(data)
        log.info("upload stored %s (%d bytes) conversation %s", path, len(data), claims.conversation_id)
        return {"document": safe_name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                "stored_as": str(path.relative_to(self._settings.data_path(".")))}
