"""The new rights are decided by the one authorization function: journey analytics and QA review
for supervisors and admins, erasure and subject access for admins only."""

from __future__ import annotations

import pytest

from gateway.agents.access import Permission, authorize
from gateway.agents.accounts import Principal, Role


@pytest.mark.parametrize("permission,allowed", [
    (Permission.READ_ANALYTICS, {Role.SUPERVISOR, Role.ADMIN}),
    (Permission.REVIEW_QA, {Role.SUPERVISOR, Role.ADMIN}),
    (Permission.ERASE_CUSTOMER, {Role.ADMIN}),
    (Permission.EXPORT_CUSTOMER, {Role.ADMIN}),
])
def test_who_may(permission: Permission, allowed: set[Role]) -> None:
    for role in Role:
        decision = authorize(Principal("x", role, frozenset({"*"})), permission)
        assert bool(decision) == (role in allowed), (role, permission, decision.reason)
        assert decision.reason
