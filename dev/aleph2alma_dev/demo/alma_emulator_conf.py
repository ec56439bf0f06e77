"""The Alma API EMULATOR's configuration endpoints: the libraries and locations its institution has.

``GET /conf/libraries`` → ``{"library": [{"code", "name", "link"}], "total_record_count"}`` and
``GET /conf/libraries/{code}/locations`` → ``{"location": [{"code", "name", "link"}], …}``: the
shape of Alma's answers as the public alma_rb client's fixtures (``spec/fixtures/locations.json``,
``library.json``) show them, with the fields the cutover's preflight reads. An unknown library
answers 400 with an Alma error document; the emulator's error code for it is its own (Alma's is
not documented where we could read it).

The institution is configured as the demo library's cutover form maps to: every Alma library and
location the form names exists (the librarian configured Alma before the cutover).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, request

LIBRARY_NOT_FOUND = "402221"  # the emulator's own code: Alma's is not documented where we looked


def demo_configuration() -> dict[str, list[str]]:
    """Library code → its location codes: what the demo's cutover form maps to."""
    from aleph2alma.cutover.alma_codes import wanted_codes
    from aleph2alma_dev.demo.form import cutover_form

    libraries, locations = wanted_codes(cutover_form())
    return {lib: sorted(loc for owner, loc in locations if owner == lib) for lib in sorted(libraries)}


def register(
    app: Flask,
    api: str,
    configuration: Mapping[str, list[str]],
    ok: Callable[[Any], Response],
    error: Callable[[str, str, int], Response],
) -> None:
    def link(path: str) -> str:
        return request.host_url.rstrip("/") + api + path

    @app.get(f"{api}/conf/libraries")
    def conf_libraries() -> Response:
        found = [{"code": c, "name": c, "link": link(f"/conf/libraries/{c}")} for c in configuration]
        return ok({"library": found, "total_record_count": len(found)})

    @app.get(f"{api}/conf/libraries/<code>/locations")
    def conf_locations(code: str) -> Response:
        if code not in configuration:
            return error(LIBRARY_NOT_FOUND, f"Library {code} was not found.", 400)
        found = [
            {"code": loc, "name": loc, "link": link(f"/conf/libraries/{code}/locations/{loc}")}
            for loc in configuration[code]
        ]
        return ok({"location": found, "total_record_count": len(found)})
