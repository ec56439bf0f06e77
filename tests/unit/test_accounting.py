import pytest

from aleph2alma.accounting import Tally, UnbalancedError
from aleph2alma.errors import PermanentError


def test_balanced_tally_adds_and_reports_reasons_sorted() -> None:
    a = Tally(3, 2)
    a.reject("missing_title")
    b = Tally.of(2, 0, {"bad_leader": 1, "missing_title": 1})
    total = Tally.total([a, b]).check("bibs")
    assert total.to_dict() == {
        "records_in": 5,
        "records_out": 2,
        "rejected": 3,
        "rejected_by_reason": {"bad_leader": 1, "missing_title": 2},
    }


def test_lost_record_is_a_permanent_error_naming_the_entity() -> None:
    with pytest.raises(UnbalancedError, match=r"items: 3 in ≠ 1 out \+ 1 rejected") as err:
        Tally.of(3, 1, {"duplicate_barcode": 1}).check("items")
    assert isinstance(err.value, PermanentError)
