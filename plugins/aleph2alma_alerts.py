"""Registers aleph2alma's deadline reference with Airflow (see ``aleph2alma.notify``).

The scheduler rebuilds a DAG's deadline alerts from their serialized form and, since Airflow
3.3, finds custom deadline references only among those a plugin registers. The nightly DAG's
"finished by 06:00 local time" deadline is such a reference: without this plugin the
scheduler would refuse to create the nightly run's deadline.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from aleph2alma.notify import LocalTimeAfterRun


class Aleph2AlmaAlertsPlugin(AirflowPlugin):
    name = "aleph2alma_alerts"
    deadline_references = [LocalTimeAfterRun]
