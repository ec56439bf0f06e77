"""The migration control room in Airflow's UI: a page in the navigation (an external view shown in
the UI's frame) served by a FastAPI app mounted in the API server under ``/aleph2alma``.

The page itself is ``aleph2alma.plan.web``; it answers only a signed-in user (Airflow's token).
"""

from __future__ import annotations

import sys
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/aleph2alma"
PAGE_PATH = "control-room"  # aleph2alma.plan.web.PAGE_PATH (a test checks they agree)


def _served_apps() -> list[dict[str, Any]]:
    """The app, built only in the API server (which has imported its own app before the plugins).
    Every task process loads the plugins too: the app's imports (FastAPI, Airflow's security)
    would add about 2.5 s to each task."""
    if "airflow.api_fastapi.app" not in sys.modules:
        return []
    from aleph2alma.plan.web import create_app

    return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "aleph2alma control room"}]


class ControlRoomPlugin(AirflowPlugin):
    name = "aleph2alma_control_room"
    fastapi_apps = _served_apps()
    external_views = [
        {
            "name": "Migration control room",
            "href": f"{URL_PREFIX.lstrip('/')}/{PAGE_PATH}",
            "url_route": "migration-control-room",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
