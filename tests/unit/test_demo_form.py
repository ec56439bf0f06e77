"""The committed demo migration form maps every code clean records use and none of the seeded ones."""

from __future__ import annotations

import pytest

from aleph2alma.alma.form import form_dir, load_form
from aleph2alma_dev.demo import codes
from aleph2alma_dev.demo.form import demo_form


@pytest.fixture(scope="module")
def form():
    return load_form(form_dir("demo"))


def test_committed_form_is_what_demo_form_builds(form) -> None:
    assert form == demo_form(), "run: aleph2alma-dev demo form, and commit include/config/demo/form"


def test_every_known_code_is_mapped(form) -> None:
    known = codes.known_codes()
    assert all(form.location_for(*pair.split("/")) for pair in known["collections"])
    assert all(form.item_policy_for(s) for s in known["item_statuses"])
    assert all(form.user_group_for(s, t) for s in known["bor_statuses"] for t in known["bor_types"])
    assert all(form.material_type_for(m) for m in known["materials"])
    assert all(form.fee_type_for(t) for t in known["fine_types"])


def test_demo_fee_types_follow_alephs_cash_types(form) -> None:
    """0003 is a late return (not a damaged item), 0040-0042 are lost-item charges (not OTHER)."""
    assert form.fee_type_for("0003") == "OVERDUEFINE"
    assert {form.fee_type_for(t) for t in ("0040", "0041", "0042")} == {
        "LOSTITEMPROCESSFEE",
        "LOSTITEMREPLACEMENTFEE",
    }


def test_seeded_unmapped_codes_stay_unmapped(form) -> None:
    assert not any(form.location_for(*pair.split("/")) for pair in codes.UNMAPPED_CODES["collections"])
    assert not any(form.item_policy_for(s) for s in codes.UNMAPPED_CODES["item_statuses"])
    assert not any(form.user_group_for(s, "01") for s in codes.UNMAPPED_CODES["bor_statuses"])
