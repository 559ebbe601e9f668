"""Suggested next steps shown to the agent on a screen-pop, from where the journey stopped."""

from __future__ import annotations

from gateway.context.store import ConversationRecord

BY_INTENT = {
    "billing_dispute": [
        "Review the latest invoice lines with the customer",
        "Confirm or adjust the dispute case and expected resolution date",
    ],
    "order_status": ["Check the carrier tracking for delays", "Offer a redelivery or refund if the order is late"],
    "password_reset": ["Confirm the reset link arrived", "Check the account for lockouts"],
    "loan_resume": ["Walk through the missing documents", "Confirm the upload link worked"],
    "appointment": ["Confirm the new appointment time", "Check availability at the customer's location"],
    "delivery": ["Check the carrier tracking", "Offer a new delivery slot"],
}


def suggest_next_steps(record: ConversationRecord, *, verified: bool, locked: bool = False) -> list[str]:
    """Plain-language suggestions for the agent who picks the conversation up. ``verified``:
    the party handing over holds a verified identity now (not some other channel's session)."""
    steps: list[str] = []
    reason = record.state.transfer.reason if record.state.transfer else ""
    if not verified:
        steps.append("Verify the customer's identity (not verified by the assistant on this channel)")
    else:
        steps.append("Identity already verified: do not ask again")
    if locked:
        steps.append("Identity checks are locked after repeated failures: follow the security procedure")
    elif "verification failed" in reason or "checks locked" in reason:
        steps.append("Verification failed repeatedly: follow the security procedure")
    if record.state.frustration >= 0.5:
        steps.append("The customer is frustrated: acknowledge the problem first")
    if record.slots.get("case_id"):
        steps.append(f"Dispute case {record.slots['case_id']} is already open")
    steps += BY_INTENT.get(record.state.intent, [])
    if not record.state.intent:
        steps.append("Ask how you can help: the intent is not known yet")
    return steps
