"""Reading an approval gate's answer (the ``ApprovalOperator``'s XCom): who answered, when, and how.

The answer is a mapping with ``chosen_options`` (``["Approve"]`` or ``["Reject"]``),
``responded_by_user`` (``{"id", "name"}``) and ``responded_at`` (a datetime, or its ISO text once
it has been through JSON).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def answered_by(answer: Mapping[str, Any]) -> str:
    user = answer.get("responded_by_user") or {}
    return str(user.get("name") or user.get("id") or "unknown") if isinstance(user, Mapping) else str(user)


def answered_at(answer: Mapping[str, Any]) -> datetime:
    """When the gate was answered (UTC); now, if the answer does not say."""
    at = answer.get("responded_at")
    if isinstance(at, datetime):
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    if not at:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def approved(answer: Mapping[str, Any]) -> bool:
    return list(answer.get("chosen_options") or []) == ["Approve"]
