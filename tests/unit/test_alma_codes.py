"""The preflight's look at Alma's configuration: the libraries and locations the form maps to.

Through the real ``AlmaClient`` against the emulator, whose configuration endpoints answer in the
shape of Alma's (``GET /conf/libraries``, ``/conf/libraries/{code}/locations``: the public alma_rb
client's fixtures show them) and whose institution has what the demo's cutover form maps to. That
the emulator has exactly those codes is our own setup: what is proven is the reading and the
comparison, not Alma's data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from aleph2alma.alma.client import AlmaApiError, AlmaClient
from aleph2alma.alma.form import MigrationForm
from aleph2alma.cutover.alma_codes import missing_codes, wanted_codes
from aleph2alma_dev.demo.alma_emulator import API, serve
from aleph2alma_dev.demo.form import cutover_form


@pytest.fixture
def alma(tmp_path: Path) -> Iterator[AlmaClient]:
    server, _thread = serve(0, tmp_path / "alma.sqlite", None)
    client = AlmaClient(f"http://127.0.0.1:{server.server_port}{API}", "test-key", per_second=0)
    try:
        yield client
    finally:
        client.close()
        server.shutdown()
        server.server_close()


def _with(form: MigrationForm, tab: str, row: dict[str, str]) -> MigrationForm:
    tabs = dict(form.tabs)
    tabs[tab] = pd.concat([tabs[tab], pd.DataFrame([row], dtype="str")], ignore_index=True)
    return MigrationForm(tabs)


def test_every_library_and_location_the_cutover_form_maps_to_is_found(alma: AlmaClient) -> None:
    libraries, locations = wanted_codes(cutover_form())
    assert "BNUZG" in libraries and ("BNUZG", "CPSTORE") in locations
    assert missing_codes(cutover_form(), alma) == []


def test_a_location_or_library_alma_lacks_is_named(alma: AlmaClient) -> None:
    form = _with(
        cutover_form(),
        "locations",
        {
            "aleph_sub_library": "BNUZG",
            "aleph_collection": "NEWC",
            "alma_library_code": "BNUZG",
            "alma_location_code": "NOWHERE",
            "alma_location_name": "",
            "electronic": "N",
        },
    )
    form = _with(form, "libraries", {"aleph_sub_library": "BNUXX", "alma_library_code": "GHOST"})
    assert missing_codes(form, alma) == ["GHOST", "BNUZG/NOWHERE"]


def test_an_alma_that_does_not_answer_raises_for_the_preflight_to_report_not_run() -> None:
    client = AlmaClient("http://127.0.0.1:9/almaws/v1", "k", per_second=0, max_retries=0)
    with pytest.raises((AlmaApiError, OSError)):
        missing_codes(cutover_form(), client)
