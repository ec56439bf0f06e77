"""The Alma API EMULATOR's entity endpoints (users, loans, requests, fees, items, bibs, holdings).

Not Ex Libris Alma: request and response shapes follow Alma's REST objects (``user``,
``item_loan``, ``user_request``, ``fee``, ``item``, ``bib``, ``holding``: its MARCXML in
``anies``, left out of the list) as far as the migration's client
uses them; codes and messages are Alma's (listed in :mod:`.alma_emulator`). Lists come back
as Alma sends them: ``{"item_loan": [...], "total_record_count": n}``, with the list left
out when it is empty, and ``limit``/``offset`` paging (at most 100).

Offline circulation (post go-live): ``POST /users/{id}/loans/{loan_id}?op=renew`` (the due date
moves ``loan_days`` past the later of now and the current due date; ``last_renew_date`` is set;
401823 when the user has no such active loan) and ``POST
/bibs/{mms}/holdings/{hid}/items/{pid}?op=scan&library=&circ_desk=`` (scan-in: an item on loan is
returned, its loan COMPLETE; an item not on loan comes back unchanged, 200).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from html import escape
from typing import Any

from flask import Flask, Response, request

from aleph2alma_dev.demo.alma_emulator_config import Limits
from aleph2alma_dev.demo.alma_emulator_store import (
    Store,
    default_due_date,
    now_z,
    renew_loan,
    return_item,
    today_z,
)

FEE_TYPES = frozenset(
    {
        "OVERDUEFINE",
        "LOSTITEMREPLACEMENTFEE",
        "LOSTITEMPROCESSFEE",
        "RECALLEDOVERDUEFINE",
        "DAMAGEDITEMFINE",
        "CARDRENEWAL",
        "GENERAL",
        "LOCKERKEY",
        "OTHER",
        "CREDIT",
        "INTERLIBRARYLOANFEE",
        "DOCUMENTDELIVERYFEE",
    }
)


def _ok(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=False), status, mimetype="application/json")


def error_body(code: str, message: str) -> dict[str, Any]:
    """Alma's error document, with a tracking id shaped like Alma's."""
    tracking = f"E01-{time.strftime('%d%H%M%S')}-{random.randrange(16**5):05X}-EMULATOR"
    return {
        "errorsExist": True,
        "errorList": {"error": [{"errorCode": code, "errorMessage": message, "trackingId": tracking}]},
        "result": None,
    }


def alma_error(code: str, message: str, status: int = 400) -> Response:
    return Response(json.dumps(error_body(code, message)), status, mimetype="application/json")


def gateway_error(code: str, message: str, status: int = 400) -> Response:
    """An error of Alma's API gateway (a refused key, a threshold): the XML ``web_service_result``
    (``web_service_result.xsd``), whatever the client asked for, without a tracking id, as other
    Alma clients' fixtures show it (unverified against Alma itself)."""
    body = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<web_service_result xmlns="http://com/exlibris/urm/general/xmlbeans">'
        f"<errorsExist>true</errorsExist><errorList><error><errorCode>{escape(code)}</errorCode>"
        f"<errorMessage>{escape(message)}</errorMessage></error></errorList></web_service_result>"
    )
    return Response(body, status, mimetype="application/xml")


_err = alma_error


def _page(key: str, rows: list[dict[str, Any]], **extra: Any) -> Response:
    limit = min(max(int(request.args.get("limit", 10) or 10), 0), 100)
    offset = max(int(request.args.get("offset", 0) or 0), 0)
    body: dict[str, Any] = {}
    page = rows[offset : offset + limit]
    if page:
        body[key] = page
    return _ok({**body, "total_record_count": len(rows), **extra})


def _body() -> dict[str, Any] | None:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else None


def _value(obj: Any) -> str:
    """A code-table field's value: ``{"value": "X"}`` or plain ``"X"``."""
    return str((obj.get("value") if isinstance(obj, dict) else obj) or "")


def _past(instant: str) -> bool:
    try:
        when = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    except ValueError:
        return False
    return (when if when.tzinfo else when.replace(tzinfo=UTC)) < datetime.now(UTC)


LISTED_HOLDING = (
    "holding_id",
    "library",
    "location",
    "call_number",
    "accession_number",
    "suppress_from_publishing",
)
"""What Alma's holdings list gives of each holding (``rest_holdings.xsd``): no originating id, no MARC."""

LOAN_STATUS_IN = frozenset({"Active", "Complete"})
"""``rest_item_loan.xsd``: a JSON PUT or POST leaves ``loan_status`` out or sends one of these (the
codes ``ACTIVE``/``COMPLETE`` are what GET returns)."""


def _loan_status_refusal(body: dict[str, Any]) -> Response | None:
    """Refuses a loan body whose ``loan_status`` the schema does not allow on input. The code is
    the emulator's: Alma's answer to it is not documented (401652 is its generic error)."""
    if "loan_status" in body and body["loan_status"] not in LOAN_STATUS_IN:
        return _err(
            "401652",
            f"General Error: loan_status {body['loan_status']!r} is not Active or Complete "
            "(a JSON PUT/POST leaves it out).",
        )
    return None


NOT_LOANABLE_PROCESSES = frozenset({"MISSING", "LOST_LOAN", "LOST_ILL", "TECHNICAL", "WORK_ORDER_DEPARTMENT"})
"""Item process types (Alma's ``process_type`` codes) that keep an item from being loaned here."""
NOT_LOANABLE = "401651"  # Alma's "Item is not loanable." (Create user loan's documented refusal)


def loan_refusal(user: dict[str, Any], item: dict[str, Any], active: int, limits: Limits) -> str | None:
    """Why the fulfilment rules refuse this loan (the message after "Item is not loanable."), or None."""
    expiry = str(user.get("expiry_date") or "").rstrip("Z")[:10]
    if expiry and expiry < datetime.now(UTC).date().isoformat():
        return f"the patron's account expired on {expiry}"
    for block in user.get("user_block") or []:
        if str(block.get("block_status") or "ACTIVE").upper() == "ACTIVE":
            return f"the patron is blocked ({_value(block.get('block_description')) or 'block'})"
    if limits.loan_limit and active >= limits.loan_limit:
        return f"the patron has {active} active loans, the limit is {limits.loan_limit}"
    if _value(item.get("policy")) in limits.not_loanable_policies:
        return f"item policy {_value(item.get('policy'))} does not loan"
    if _value(item.get("process_type")) in NOT_LOANABLE_PROCESSES:
        return f"the item is in process {_value(item.get('process_type'))}"
    return None


def register(app: Flask, api: str, store: Store, limits: Limits) -> None:
    """Add the entity routes to ``app`` under ``api``."""
    base = f"{api}"

    def link(path: str) -> str:
        return request.host_url.rstrip("/") + base + path

    def with_user(code: str) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
        """Resolve ``user_id`` (primary id or unique identifier) or answer ``code``."""

        def wrap(view: Callable[..., Response]) -> Callable[..., Response]:
            def inner(user_id: str, **kw: Any) -> Response:
                user = store.user(user_id)
                if user is None:
                    message = (
                        f"User with identifier {user_id} was not found."
                        if code == "401861"
                        else f"User with identifier {user_id} of type all_unique was not found."
                    )
                    return _err(code, message)
                return view(user, **kw)

            inner.__name__ = view.__name__
            return inner

        return wrap

    # -- users -------------------------------------------------------------------------

    @app.get(f"{api}/users/<user_id>")
    @with_user("401861")
    def get_user(user: dict[str, Any]) -> Response:
        return _ok({**user, "link": link(f"/users/{user['primary_id']}")})

    @app.post(f"{api}/users")
    def create_user() -> Response:
        user = _body()
        if user is None:
            return _err("401676", "No valid XML was given.")
        for name in ("primary_id", "record_type"):
            if not _value(user.get(name)):
                return _err("401664", f"Mandatory field is missing: {name}")
        account = _value(user.get("account_type")) or "INTERNAL"
        if account not in ("INTERNAL", "EXTERNAL"):
            return _err("401857", "The given user account type is illegal (must be INTERNAL/EXTERNAL).")
        if account == "EXTERNAL" and not user.get("external_id"):
            return _err("401854", "External Id must be given for external user.")
        if account == "INTERNAL" and user.get("external_id"):
            return _err("401853", "External Id must be empty for internal user.")
        result = store.save_user(user, replace=False)
        if isinstance(result, str):
            return _err("401851", result)
        return _ok({**result[0], "link": link(f"/users/{user['primary_id']}")})

    # -- loans -------------------------------------------------------------------------

    @app.get(f"{api}/users/<user_id>/loans")
    @with_user("401890")
    def user_loans(user: dict[str, Any]) -> Response:
        loans = store.many(
            "SELECT data FROM loans WHERE primary_id = ? AND status = 'ACTIVE' ORDER BY loan_id",
            user["primary_id"],
        )
        return _page("item_loan", loans)

    @app.post(f"{api}/users/<user_id>/loans")
    @with_user("401890")
    def create_loan(user: dict[str, Any]) -> Response:
        body = _body() or {}
        refusal = _loan_status_refusal(body)
        if refusal is not None:
            return refusal
        barcode, pid = request.args.get("item_barcode"), request.args.get("item_pid")
        if not (barcode or pid):
            return _err("401672", "PID field is empty.")
        item = store.item_row(barcode=barcode) if barcode else store.item_row(pid=pid)
        if item is None:
            return _err("401689", f"No items found for barcode {barcode or pid}.")
        for name in ("circ_desk", "library"):
            if not _value(body.get(name)):
                return _err("401664", f"Mandatory field is missing: {name}")
        bib = store.bib(item["_mms_id"]) or {}
        loan_id = store.new_id("loan")
        loan = {
            "loan_id": loan_id,
            "circ_desk": {"value": _value(body["circ_desk"])},
            "library": {"value": _value(body["library"])},
            "user_id": user["primary_id"],
            "item_barcode": item["barcode"],
            "item_id": item["pid"],
            "mms_id": item["_mms_id"],
            "holding_id": item["_holding_id"],
            "title": bib.get("title", ""),
            "author": bib.get("author", ""),
            "loan_status": "ACTIVE",
            "loan_date": now_z(),
            "due_date": default_due_date(limits.loan_days),
            "process_status": "NORMAL",
            "location_code": item["location"],
            "item_policy": item["policy"],
        }
        with store.tx() as db:
            if db.execute(
                "SELECT 1 FROM loans WHERE item_pid = ? AND status = 'ACTIVE'", (item["pid"],)
            ).fetchone():
                return _err("401651", f"Item is not loanable: item {item['barcode']} is already on loan.")
            active = db.execute(
                "SELECT count(*) FROM loans WHERE primary_id = ? AND status = 'ACTIVE'", (user["primary_id"],)
            ).fetchone()[0]
            why = loan_refusal(user, item, active, limits)
            if why is not None:
                return _err(NOT_LOANABLE, f"Item is not loanable: {why}.")
            db.execute(
                "INSERT INTO loans VALUES (?, ?, ?, 'ACTIVE', ?)",
                (loan_id, user["primary_id"], item["pid"], json.dumps(loan, ensure_ascii=False)),
            )
            store.set_item(
                db,
                item["pid"],
                base_status={"value": "0", "desc": "Item not in place"},
                process_type={"value": "LOAN", "desc": "Loan"},
            )
        return _ok({**loan, "link": link(f"/users/{user['primary_id']}/loans/{loan_id}")})

    @app.put(f"{api}/users/<user_id>/loans/<loan_id>")
    @with_user("401890")
    def change_due_date(user: dict[str, Any], loan_id: str) -> Response:
        body = _body() or {}
        loan = store.one(
            "SELECT data FROM loans WHERE loan_id = ? AND primary_id = ?", loan_id, user["primary_id"]
        )
        if loan is None:
            return _err("401823", f"Loan ID {loan_id} does not exist.")
        refusal = _loan_status_refusal(body)
        if refusal is not None:
            return refusal
        due = str(body.get("due_date") or "")
        if not due:
            return _err("401824", "Due date is not in loan object.")
        if _past(due):
            return _err("401681", "Due date cannot be in the past.")
        loan = {**loan, "due_date": due}
        with store.tx() as db:
            db.execute(
                "UPDATE loans SET data = ? WHERE loan_id = ?", (json.dumps(loan, ensure_ascii=False), loan_id)
            )
        return _ok({**loan, "link": link(f"/users/{user['primary_id']}/loans/{loan_id}")})

    @app.post(f"{api}/users/<user_id>/loans/<loan_id>")
    @with_user("401890")
    def renew(user: dict[str, Any], loan_id: str) -> Response:
        # Alma's "Renew loan" (Users > Loans): op=renew, no body; answers the renewed item_loan.
        # 401823 for a loan the user does not have (or has returned) is the emulator's choice, the
        # code its PUT gives for an unknown loan: what Alma answers a renew of one is unverified.
        if request.args.get("op") != "renew":
            return _err("401652", "General Error: op must be renew.")
        loan = renew_loan(store, user["primary_id"], loan_id, limits.loan_days)
        if loan is None:
            return _err("401823", f"Loan ID {loan_id} does not exist.")
        return _ok({**loan, "link": link(f"/users/{user['primary_id']}/loans/{loan_id}")})

    # -- requests ----------------------------------------------------------------------

    @app.get(f"{api}/users/<user_id>/requests")
    @with_user("401890")
    def user_requests(user: dict[str, Any]) -> Response:
        rows = store.many(
            "SELECT data FROM requests WHERE primary_id = ? ORDER BY request_id", user["primary_id"]
        )
        return _page("user_request", rows)

    @app.post(f"{api}/users/<user_id>/requests")
    @with_user("401890")
    def create_request(user: dict[str, Any]) -> Response:
        body = _body() or {}
        pid, mms_id = request.args.get("item_pid"), request.args.get("mms_id")
        item = store.item_row(pid=pid) if pid else None
        mms_id = item["_mms_id"] if item else mms_id
        bib = store.bib(mms_id) if mms_id else None
        if bib is None or (pid and item is None):
            return _err("401129", "No items can fulfill the submitted request.")
        if body.get("pickup_location_type", "LIBRARY") == "LIBRARY" and not body.get(
            "pickup_location_library"
        ):
            return _err("401664", "Mandatory field is missing: pickup_location_library")
        request_id = store.new_id("request")
        data = {
            "request_id": request_id,
            "user_primary_id": user["primary_id"],
            "request_type": body.get("request_type") or "HOLD",
            "request_sub_type": {"value": "PATRON_PHYSICAL", "desc": "Patron physical item request"},
            "request_status": "NOT_STARTED",
            "pickup_location": body.get("pickup_location_library", ""),
            "pickup_location_type": body.get("pickup_location_type") or "LIBRARY",
            "pickup_location_library": body.get("pickup_location_library", ""),
            "mms_id": bib["mms_id"],
            "title": bib.get("title", ""),
            "author": bib.get("author", ""),
            "comment": body.get("comment", ""),
            "request_date": today_z(),
            "request_time": now_z(),
            "task_name": "Pickup From Shelf",
        }
        if body.get("last_interest_date"):
            data["last_interest_date"] = body["last_interest_date"]
        if item:
            data |= {"item_id": item["pid"], "barcode": item["barcode"], "holding_id": item["_holding_id"]}
        with store.tx() as db:
            if (
                item
                and db.execute(
                    "SELECT 1 FROM requests WHERE primary_id = ? AND item_pid = ?",
                    (user["primary_id"], item["pid"]),
                ).fetchone()
            ):
                return _err(
                    "401136", "Failed to save the request: Patron has active request for selected item."
                )
            db.execute(
                "INSERT INTO requests VALUES (?, ?, ?, ?)",
                (
                    request_id,
                    user["primary_id"],
                    item["pid"] if item else None,
                    json.dumps(data, ensure_ascii=False),
                ),
            )
        return _ok(data)

    # -- fees --------------------------------------------------------------------------

    @app.get(f"{api}/users/<user_id>/fees")
    @with_user("401861")
    def user_fees(user: dict[str, Any]) -> Response:
        status = request.args.get("status", "ACTIVE").upper()
        fees = [
            f
            for f in store.many(
                "SELECT data FROM fees WHERE primary_id = ? ORDER BY fee_id", user["primary_id"]
            )
            if f["status"]["value"] == status
        ]
        body: dict[str, Any] = {"fee": fees} if fees else {}
        return _ok(
            {
                **body,
                "total_record_count": len(fees),
                "total_sum": round(sum(float(f["balance"]) for f in fees), 2),
                "currency": "CNY",
            }
        )

    @app.post(f"{api}/users/<user_id>/fees")
    @with_user("401861")
    def create_fee(user: dict[str, Any]) -> Response:
        body = _body() or {}
        fee_type = _value(body.get("type"))
        if not fee_type:
            return _err("4019991", "User fine/fee type is required.")
        if fee_type not in FEE_TYPES:
            return _err("4019992", "User fine/fee type invalid entry.")
        if body.get("original_amount") in (None, ""):
            return _err("4019994", "User fine/fee original amount is required.")
        if not _value(body.get("owner")):
            return _err("4019996", "User fine/fee owner is required.")
        fee_id = store.new_id("fee")
        amount = round(float(body["original_amount"]), 2)
        fee = {
            "id": fee_id,
            "type": {"value": fee_type},
            "status": {"value": "ACTIVE", "desc": "Active"},
            "user_primary_id": {"value": user["primary_id"]},
            "balance": amount,
            "remaining_vat_amount": 0.0,
            "original_amount": amount,
            "original_vat_amount": 0.0,
            "creation_time": body.get("creation_time") or now_z(),
            "status_time": now_z(),
            "comment": body.get("comment", ""),
            "owner": {"value": _value(body["owner"])},
            **({"barcode": {"value": _value(body["barcode"])}} if _value(body.get("barcode")) else {}),
            "link": link(f"/users/{user['primary_id']}/fees/{fee_id}"),
        }
        with store.tx() as db:
            db.execute(
                "INSERT INTO fees VALUES (?, ?, ?)",
                (fee_id, user["primary_id"], json.dumps(fee, ensure_ascii=False)),
            )
        return _ok(fee)

    # -- inventory ---------------------------------------------------------------------

    @app.get(f"{api}/bibs/<mms_id>/holdings/<holding_id>/items/<pid>")
    def get_item(mms_id: str, holding_id: str, pid: str) -> Response:
        row = store.item_row(pid=pid)
        if row is None or row["_mms_id"] != mms_id or row["_holding_id"] != holding_id:
            return _err("401652", "General Error: An error has occurred while processing the request.")
        return _ok(store.item_json(row, request.host_url.rstrip("/") + base))

    @app.post(f"{api}/bibs/<mms_id>/holdings/<holding_id>/items/<pid>")
    def scan_in(mms_id: str, holding_id: str, pid: str) -> Response:
        # Alma's "Scan-in operation on an item" (Bibs > Items): op=scan at library + circ_desk.
        # 401664 for a missing library/circ_desk is the emulator's (Alma's code unverified).
        row = store.item_row(pid=pid)
        if row is None or row["_mms_id"] != mms_id or row["_holding_id"] != holding_id:
            return _err("401652", "General Error: An error has occurred while processing the request.")
        if request.args.get("op") != "scan":
            return _err("401652", "General Error: op must be scan.")
        for name in ("library", "circ_desk"):
            if not request.args.get(name):
                return _err("401664", f"Mandatory field is missing: {name}")
        return_item(store, pid, str(request.args["circ_desk"]))
        item = store.item_row(pid=pid) or row  # the item as it is now (items are never deleted)
        return _ok(store.item_json(item, request.host_url.rstrip("/") + base))

    @app.get(f"{api}/bibs/<mms_id>/holdings")
    def bib_holdings(mms_id: str) -> Response:
        bib = store.bib(mms_id)
        if bib is None:
            return _err("402203", f"Input parameters mmsId {mms_id} is not valid.")
        holdings = [
            {
                **{k: h[k] for k in LISTED_HOLDING if k in h},
                "link": link(f"/bibs/{mms_id}/holdings/{h['holding_id']}"),
            }
            for h in store.holdings_of(mms_id)
        ]
        bib_data = {k: bib.get(k) for k in ("mms_id", "title", "author", "network_number")}
        return _ok(
            {
                **({"holding": holdings} if holdings else {}),
                "bib_data": {**bib_data, "link": link(f"/bibs/{mms_id}")},
                "total_record_count": len(holdings),
            }
        )

    @app.get(f"{api}/bibs/<mms_id>/holdings/<holding_id>")
    def get_holding(mms_id: str, holding_id: str) -> Response:
        if store.bib(mms_id) is None:
            return _err("402203", f"Input parameters mmsId {mms_id} is not valid.")
        holding = store.holding(holding_id)
        if holding is None or holding.pop("_mms_id") != mms_id:
            return _err("402204", f"Input parameters holdingId {holding_id} is not valid.")
        return _ok({**holding, "link": link(f"/bibs/{mms_id}/holdings/{holding_id}")})

    @app.get(f"{api}/bibs")
    def get_bibs() -> Response:
        other, mms_ids = request.args.get("other_system_id"), request.args.get("mms_id")
        if other:
            bibs = store.bibs_by_other_id(other)
        elif mms_ids:
            bibs = [b for m in mms_ids.split(",") if (b := store.bib(m.strip()))]
        else:
            return _err("401652", "General Error: give mms_id or other_system_id.")
        bibs = [{**b, "link": link(f"/bibs/{b['mms_id']}")} for b in bibs]
        return _ok({**({"bib": bibs} if bibs else {}), "total_record_count": len(bibs)})
