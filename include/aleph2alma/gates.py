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
auto-approves). Users assigned in the DAG file win; otherwise the Variable's
``gate_assignees`` are assigned when the gate opens, and only they can answer it.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator


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

        settings = load_settings()
        if not self.assigned_users:
            users = [a.hitl_user() for a in settings.assignees(self.dag_id, self.task_id)]
            self.assigned_users = users or None  # type: ignore[assignment]  # HITLUser is this TypedDict
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
        return super().execute_complete(context, event)
