"""Approval gates that remind their assigned users once, and never decide by themselves.

A gate (Ex Libris has loaded the test environment, a fix-cycle sign-off) can wait days, and a
gate nobody knows is open holds the whole migration. What Airflow 3.3 offers and why this
uses the response timeout:

- a HITL operator's ``notifiers`` run once, when the gate *opens*: a "please answer" at
  once, not a reminder after a delay;
- deadline alerts belong to the DAG run and are computed when the run is created, long
  before the gate opens (after an extract and transform of unknown length); 3.3 has none
  per task;
- the HITL ``response_timeout`` is checked by the scheduler (the ``awaiting_input`` timeout
  sweep) with no worker slot or trigger held meanwhile. A gate without ``defaults`` that times
  out is resumed with a timeout event instead of being answered.

:class:`ApprovalGate` sets the response timeout to the reminder delay
(``gate_reminder_minutes`` of the ``aleph2alma_alerts`` Variable, read when the gate opens).
When it passes unanswered, the gate sends ``AlertNotifier(Kind.GATE_WAITING)`` to its
assigned users and waits again, this time with no timeout: reminded exactly once, still
waiting for a person. An answer before the delay means no reminder at all. A gate must not
have ``defaults``: with them Airflow would answer it at the timeout (invariant: nothing
auto-approves).

Who answers: users assigned in the DAG file win; otherwise, when the migration has a plan
(``plan.yaml``), the users of the role the plan gives the gate (and of its escalation roles);
otherwise the alerts Variable's ``gate_assignees``. They are assigned when the gate opens, and
only they can answer it. With a plan, the body also names the key node the gate closes and its
planned day, and the key node's actual (when, who, the outcome) is recorded when it is answered
(``aleph2alma.plan``).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

log = logging.getLogger(__name__)


class ApprovalGate(ApprovalOperator):
    """``ApprovalOperator`` with one reminder to its assigned users after the configured delay."""

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("defaults") is not None:
            raise ValueError(
                f"gate {kwargs.get('task_id')!r}: defaults would answer the gate at its reminder "
                "time; an approval gate is answered by a person only"
            )
        # HITLOperator reads an execution_timeout given without a response_timeout as the (deprecated)
        # response wait and clears it. Here the response timeout is the reminder delay, set when the
        # gate opens; the execution_timeout keeps bounding what it is for: each run of ``execute``
        # (Airflow 3.3 does not count the time awaiting input against it).
        execution_timeout = kwargs.get("execution_timeout") or (kwargs.get("default_args") or {}).get(
            "execution_timeout"
        )
        super().__init__(**{**kwargs, "execution_timeout": None})
        self.execution_timeout = execution_timeout

    def execute(self, context: Any) -> Any:
        from aleph2alma.notify import load_settings
        from aleph2alma.plan.catalog import gate_spec
        from aleph2alma.plan.gate_owners import gate_brief
        from aleph2alma.plan.model import plan_of_run

        settings = load_settings()
        plan, gate = plan_of_run(context.get("params")), gate_spec(self.dag_id, self.task_id)
        if not self.assigned_users:
            owners = plan.gate_assignees(self.dag_id, self.task_id) if plan and gate else []
            users = [a.hitl_user() for a in owners or settings.assignees(self.dag_id, self.task_id)]
            self.assigned_users = users or None  # type: ignore[assignment]  # HITLUser is this TypedDict
        if plan and gate:
            self.body = f"{self.body or ''}\n\n{gate_brief(plan, gate)}"
            _record_opened(context, gate)
        self.response_timeout = settings.reminder_delay()
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if event.get("error_type") == "timeout":
            from airflow.sdk.exceptions import TaskAwaitingInput

            from aleph2alma.alerts import Kind
            from aleph2alma.notify import AlertNotifier

            try:
                AlertNotifier(Kind.GATE_WAITING)(context)
            except Exception:
                # The gate matters more than its reminder: it keeps waiting; the log says what failed.
                self.log.exception("The reminder could not be sent; the gate keeps waiting all the same")
            self.log.info("Waiting for an answer, with no further reminder")
            raise TaskAwaitingInput(method_name="execute_complete", timeout=None)
        answer = super().execute_complete(context, event)
        _record_answered(context, answer)
        return answer


def _record_opened(context: Any, gate: Any) -> None:
    from datetime import UTC, datetime

    from aleph2alma import wiring
    from aleph2alma.plan.gate_owners import record_opened

    ti = context["ti"]
    opened = ti.start_date or datetime.now(UTC)
    record_opened(wiring.artifact_store(), context["params"]["migration_id"], gate, ti.run_id, opened)


def _record_answered(context: Any, answer: Any) -> None:
    """The key node's actual. The answer stands even if this fails: a retry would ask again."""
    from aleph2alma.plan.catalog import gate_spec

    ti = context["ti"]
    gate = gate_spec(ti.dag_id, ti.task_id)
    migration_id = str((context.get("params") or {}).get("migration_id") or "")
    if gate is None or not migration_id:
        return
    try:
        from aleph2alma import wiring
        from aleph2alma.plan.gate_owners import record_answered

        where = record_answered(wiring.artifact_store(), migration_id, gate, ti.run_id, answer)
        if where:
            log.info("Key node %s recorded: %s", gate.closes, where)
    except Exception:
        log.exception(
            "The key node %s could not be recorded; the answer stands. The control room will not show "
            "its actual until the gate is answered again in a later run",
            gate.closes,
        )
