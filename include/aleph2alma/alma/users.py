"""Patrons (Z303 + Z304 + Z305 + Z308) → Alma user XML for an SIS "Import" profile.

The output is the ``<users><user>…</user></users>`` document Alma's SIS loader reads, with
the element names of Alma's REST ``user`` object (rest_user.xsd), written user by user to
a binary stream: the document is never held in memory. Per user:

- ``record_type`` PUBLIC, ``account_type`` EXTERNAL, ``status`` ACTIVE, ``primary_id``
  (Z303_PRIMARY_ID);
- ``first_name`` / ``last_name`` from Z303_NAME (``split_name``);
- ``user_group`` from the Z305 row with the latest expiry (bor status + bor type through
  the form; unmapped → the form's ``default_user_group``);
- ``expiry_date`` the latest Z305_EXPIRY_DATE of the patron's sub-libraries (else the
  form's ``patron_expiry_default``), ``purge_date`` the form's ``patron_purge_default``,
  ``birth_date``; dates as Alma writes them, ``2031-07-31Z``;
- ``contact_info``: one address per Z304 row with address lines (ADDRESS_0 is skipped when
  it repeats the name, as Aleph's mailing label does), its e-mails and phones; the first row
  valid on ``as_of`` is preferred;
- ``user_identifiers`` from Z308: key type 01 → BARCODE, 02 → UNIV_ID (``identifier_types``);
- ``user_notes``: Z303_DELINQ_N_1 as a circulation note.

PINs (Z308_VERIFICATION) are never written. With ``pin_hash_secret`` set, an internal
note carries ``aleph-pin-hmac-sha256:<hex>``: HMAC-SHA256 keyed by the secret over
``primary_id + NUL + PIN`` (the primary id salts it per user). A PIN has few digits, so the
hash is only as safe as the secret: keep the secret out of the delivery.

Text is NFC-normalised and escaped; characters XML 1.0 cannot hold are removed and counted.
With ``scrub_emails``, every address becomes ``<primary_id>@<scrub_domain>`` so that a test
load can never mail a real patron.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import BinaryIO
from xml.sax.saxutils import escape

import pyarrow as pa
import pyarrow.compute as pc

from aleph2alma.alma.items import FormLookups, date_column, form_default, require_columns, text_column
from aleph2alma.rejects import Reject, RejectLog

ENTITY = "patrons"
KEY_WIDTH = 12  # Z303_REC_KEY: the patron id inside the Z304/Z305 keys

DEFAULT_IDENTIFIER_TYPES = {"01": "BARCODE", "02": "UNIV_ID"}
"""Z308 key type → Alma user identifier type; other key types are not migrated (counted)."""

DEFAULT_ADDRESS_TYPES = {"01": "home", "02": "school", "03": "work"}
"""Z304_ADDRESS_TYPE → Alma address type; others become ``alternative``."""

_EMAIL_TYPES = {"home": "personal", "school": "school", "work": "work"}
_PHONE_TYPES = {"home": "home", "school": "office", "work": "office"}
_MOBILE = re.compile(r"^(?:\+?86)?1[3-9]\d{9}$")  # a mainland China mobile number
_INVALID_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CJK = re.compile("[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_NAME_DOTS = "·・•‧"  # separators of transliterated names: 约翰·史密斯
COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 慕容 长孙 宇文 司徒 夏侯 轩辕 令狐 澹台 端木 呼延 南宫 万俟 "
    "闻人 钟离 申屠 西门 独孤 单于 太史 濮阳 公冶 赫连 百里 东郭 左丘 梁丘 拓跋 第五 歐陽 司馬 諸葛 "
    "長孫 軒轅 鍾離".split())
"""Two-character Chinese family names (simplified and traditional); all others have one."""


@dataclass(frozen=True)
class UserOptions:
    """How patrons are written. Defaults suit a test load without PIN hashes."""

    scrub_emails: bool = False  # replace every e-mail with <primary_id>@<scrub_domain>
    scrub_domain: str = "example.invalid"
    as_of: date | None = None  # the run's logical date: picks the preferred (current) address
    pin_hash_secret: str = ""  # opt-in: HMAC of the Aleph PIN as an internal note; "" = no PIN at all
    external_id: str = ""  # the SIS profile's external system code, written when set
    identifier_types: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_IDENTIFIER_TYPES))
    address_types: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ADDRESS_TYPES))


@dataclass
class UserStats:
    """Counts of one part: ``records_in == records_out + rejected`` always holds."""

    records_in: int = 0
    records_out: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    group_fallbacks: int = 0  # users given the form's default_user_group
    invalid_chars_removed: int = 0
    emails_scrubbed: int = 0
    identifiers_skipped: int = 0  # Z308 rows of a key type not in identifier_types
    pins_hashed: int = 0
    orphan_rows: int = 0  # Z304/Z305/Z308 rows whose patron is not in this Z303 part

    @property
    def balanced(self) -> bool:
        return self.records_in == self.records_out + self.rejected


def split_name(name: str) -> tuple[str, str]:
    """Z303_NAME → (first name, last name).

    ``Last, First`` (Western, also with a full-width comma) splits at the comma. A Chinese
    name has no comma: its family name is the first character, or the first two for a
    compound surname (欧阳修 → 修, 欧阳); a space after the family name is respected, and a
    transliterated name splits at its middle dot (约翰·史密斯 → 约翰, 史密斯). Any other
    name puts its last word in the last name.
    """
    name = " ".join(unicodedata.normalize("NFC", name).split())
    if not name:
        return "", ""
    for comma in (",", "，"):
        if comma in name:
            last, first = name.split(comma, 1)
            return first.strip(), last.strip()
    if _CJK.search(name):
        for dot in _NAME_DOTS:
            if dot in name:
                first, last = name.split(dot, 1)
                return first.strip(), last.strip()
        if " " in name:
            last, first = name.split(" ", 1)
            return first, last
        size = 2 if name[:2] in COMPOUND_SURNAMES and len(name) > 2 else 1
        return name[size:], name[:size]
    first, _, last = name.rpartition(" ")
    return first, last


def patron_primary_ids(z303: pa.Table, excluded: Mapping[str, str] | None = None) -> dict[str, str]:
    """Z303_REC_KEY → primary id (stripped): what loans, requests and fines link through.

    Patrons in ``excluded`` and patrons without a primary id are left out, so fulfillment
    records of patrons who do not migrate are rejected as ``unknown_patron``.
    """
    excluded = excluded or {}
    pairs = zip(text_column(z303, "Z303_REC_KEY").to_pylist(), text_column(z303, "Z303_PRIMARY_ID").to_pylist(),
                strict=True)
    return {key: primary for key, primary in pairs if key and primary and key not in excluded}


class _Text:
    """Cleans text for XML: NFC, characters XML 1.0 cannot hold removed (and counted), escaped."""

    def __init__(self, stats: UserStats) -> None:
        self.stats = stats

    def __call__(self, value: str) -> str:
        value = unicodedata.normalize("NFC", value)
        value, removed = _INVALID_XML.subn("", value)
        self.stats.invalid_chars_removed += removed
        return escape(value)


def _same_text(a: str, b: str) -> bool:
    def norm(text: str) -> str:
        return " ".join(unicodedata.normalize("NFC", text).split())

    return bool(a) and norm(a) == norm(b)


def _alma_date(yyyymmdd: date | str | None) -> str:
    """A date as Alma's user XML writes it (``2031-07-31Z``); ``""`` when unset or invalid."""
    if isinstance(yyyymmdd, date):
        return f"{yyyymmdd.isoformat()}Z"
    if yyyymmdd and len(yyyymmdd) == 8 and yyyymmdd.isdigit():
        try:
            return f"{date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:])).isoformat()}Z"
        except ValueError:
            return ""
    return ""


def _rows(columns: dict[str, pa.Array]) -> list[dict[str, object]]:
    return pa.table(columns).to_pylist()


def _patron_of(table: pa.Table, key: str) -> pa.Array:
    """The patron id inside a composite key: its first 12 characters, sliced before stripping."""
    raw = table.column(key).combine_chunks().fill_null("")
    return pc.ascii_trim_whitespace(pc.utf8_slice_codeunits(raw, 0, KEY_WIDTH))


def _group(rows: list[dict[str, object]], known: set[str], stats: UserStats) -> dict[str, list[dict[str, object]]]:
    grouped: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        patron = str(row["patron"])
        if patron in known:
            grouped.setdefault(patron, []).append(row)
        else:
            stats.orphan_rows += 1
    return grouped


def write_users_xml(z303: pa.Table, z304: pa.Table, z305: pa.Table, z308: pa.Table, form: FormLookups,
                    out: BinaryIO, excluded: Mapping[str, str], rejects: RejectLog,
                    options: UserOptions) -> UserStats:
    """Write one part's patrons as an Alma users XML document to ``out``.

    ``z304``/``z305``/``z308`` hold (at least) the rows of the patrons in ``z303``; rows of
    other patrons are ignored and counted. Patrons in ``excluded`` (Z303 key → reason), with
    a blank key or primary id, or repeating a primary id already written are rejected.
    Rejects carry the patron id only: no names or addresses leave for reports.
    """
    require_columns(z303, ["Z303_REC_KEY", "Z303_PRIMARY_ID", "Z303_NAME", "Z303_BIRTH_DATE", "Z303_DELINQ_N_1"],
                    "Z303")
    require_columns(z304, ["Z304_REC_KEY", "Z304_ADDRESS_0", "Z304_ADDRESS_1", "Z304_ADDRESS_2", "Z304_ZIP",
                           "Z304_EMAIL_ADDRESS", "Z304_TELEPHONE", "Z304_DATE_FROM", "Z304_DATE_TO",
                           "Z304_ADDRESS_TYPE"], "Z304")
    require_columns(z305, ["Z305_REC_KEY", "Z305_BOR_TYPE", "Z305_BOR_STATUS", "Z305_EXPIRY_DATE"], "Z305")
    require_columns(z308, ["Z308_REC_KEY", "Z308_ID", "Z308_VERIFICATION"], "Z308")
    stats = UserStats(records_in=z303.num_rows)
    patrons = _rows({
        "key": text_column(z303, "Z303_REC_KEY"), "primary_id": text_column(z303, "Z303_PRIMARY_ID"),
        "name": text_column(z303, "Z303_NAME"), "birth": date_column(z303, "Z303_BIRTH_DATE"),
        "delinq": text_column(z303, "Z303_DELINQ_N_1")})
    known = {str(p["key"]) for p in patrons}
    addresses = _group(_rows({
        "patron": _patron_of(z304, "Z304_REC_KEY"), "key": text_column(z304, "Z304_REC_KEY"),
        **{f"line{i}": text_column(z304, f"Z304_ADDRESS_{i}") for i in range(3)},
        "zip": text_column(z304, "Z304_ZIP"), "email": text_column(z304, "Z304_EMAIL_ADDRESS"),
        "phone": text_column(z304, "Z304_TELEPHONE"), "type": text_column(z304, "Z304_ADDRESS_TYPE"),
        "start": date_column(z304, "Z304_DATE_FROM"), "end": date_column(z304, "Z304_DATE_TO")}), known, stats)
    locals_ = _group(_rows({
        "patron": _patron_of(z305, "Z305_REC_KEY"), "key": text_column(z305, "Z305_REC_KEY"),
        "bor_status": text_column(z305, "Z305_BOR_STATUS"), "bor_type": text_column(z305, "Z305_BOR_TYPE"),
        "expiry": date_column(z305, "Z305_EXPIRY_DATE")}), known, stats)
    identifiers = _group(_rows({
        "patron": text_column(z308, "Z308_ID"), "key": text_column(z308, "Z308_REC_KEY"),
        "pin": text_column(z308, "Z308_VERIFICATION")}), known, stats)

    writer = _UserWriter(form, options, stats)
    seen: set[str] = set()
    out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<users>\n')
    for patron in patrons:
        key, primary_id = str(patron["key"]), str(patron["primary_id"])
        reason = _reject_reason(key, primary_id, excluded, seen)
        if reason:
            rejects.add(Reject(ENTITY, key, reason, detail="" if key else f"Z303 row with primary id {primary_id!r}"))
            stats.rejected += 1
            stats.rejected_by_reason[reason] = stats.rejected_by_reason.get(reason, 0) + 1
            continue
        seen.add(primary_id)
        xml = writer.user(patron, addresses.get(key, []), locals_.get(key, []), identifiers.get(key, []))
        out.write(xml.encode("utf-8"))
        stats.records_out += 1
    out.write(b"</users>\n")
    return stats


def _reject_reason(key: str, primary_id: str, excluded: Mapping[str, str], seen: set[str]) -> str | None:
    if not key:
        return "missing_patron_key"
    if key in excluded:
        return excluded[key]
    if not primary_id:
        return "missing_primary_id"
    if primary_id in seen:
        return "duplicate_primary_id"  # a safety net: validation normally excludes the whole group
    return None


class _UserWriter:
    """Builds one ``<user>`` element as text (a few hundred bytes per patron)."""

    def __init__(self, form: FormLookups, options: UserOptions, stats: UserStats) -> None:
        self.form, self.options, self.stats, self.text = form, options, stats, _Text(stats)
        self.default_group = form_default(form, "default_user_group")
        self.default_expiry = _alma_date(form_default(form, "patron_expiry_default"))
        self.purge = _alma_date(form_default(form, "patron_purge_default"))

    def _el(self, name: str, value: str) -> str:
        return f"<{name}>{self.text(value)}</{name}>" if value else ""

    def user(self, patron: Mapping[str, object], addresses: list[dict[str, object]],
             locals_: list[dict[str, object]], identifiers: list[dict[str, object]]) -> str:
        primary_id = str(patron["primary_id"])
        first, last = split_name(str(patron["name"]))
        group, expiry = self._group_and_expiry(locals_)
        birth = patron["birth"]
        parts = [
            "<user>", "<record_type>PUBLIC</record_type>", self._el("primary_id", primary_id),
            self._el("first_name", first), self._el("last_name", last), self._el("user_group", group),
            f"<birth_date>{_alma_date(birth)}</birth_date>" if isinstance(birth, date) else "",
            f"<expiry_date>{expiry}</expiry_date>" if expiry else "",
            f"<purge_date>{self.purge}</purge_date>" if self.purge else "",
            "<account_type>EXTERNAL</account_type>", self._el("external_id", self.options.external_id),
            "<status>ACTIVE</status>",
            self._contact_info(primary_id, str(patron["name"]), addresses),
            self._identifiers(identifiers),
            self._notes(primary_id, str(patron["delinq"]), identifiers),
            "</user>\n",
        ]
        return "".join(parts)

    def _group_and_expiry(self, locals_: list[dict[str, object]]) -> tuple[str, str]:
        """User group of the Z305 row that expires last (first such row on ties), and that expiry."""
        best: dict[str, object] | None = None
        for row in sorted(locals_, key=lambda r: str(r["key"])):
            expiry = row["expiry"]
            if best is None or (isinstance(expiry, date) and (not isinstance(best["expiry"], date)
                                                              or expiry > best["expiry"])):
                best = row
        group = self.form.user_group_for(str(best["bor_status"]), str(best["bor_type"])) if best else None
        if group is None:
            self.stats.group_fallbacks += 1
            group = self.default_group
        expiry = best["expiry"] if best else None
        return group, _alma_date(expiry) if isinstance(expiry, date) else self.default_expiry

    def _current(self, row: Mapping[str, object]) -> bool:
        as_of, start, end = self.options.as_of, row["start"], row["end"]
        if as_of is None:
            return True
        return not (isinstance(start, date) and start > as_of) and not (isinstance(end, date) and end < as_of)

    def _contact_info(self, primary_id: str, name: str, rows: list[dict[str, object]]) -> str:
        rows = sorted(rows, key=lambda r: str(r["key"]))
        rows.sort(key=lambda r: not self._current(r))  # current rows first, else in sequence order
        addresses: list[str] = []
        emails: list[str] = []
        phones: list[str] = []
        seen_emails: set[str] = set()
        seen_phones: set[str] = set()
        for row in rows:
            kind = self.options.address_types.get(str(row["type"]), "alternative")
            lines = [str(row[f"line{i}"]) for i in range(3)]
            if _same_text(lines[0], name):
                lines[0] = ""  # Z304_ADDRESS_0 holds the name on Aleph's mailing label
            lines = [line for line in lines if line]
            if lines:
                flag = "true" if not addresses else "false"
                body = "".join(self._el(f"line{i + 1}", line) for i, line in enumerate(lines))
                body += self._el("postal_code", str(row["zip"]))
                for tag in ("start", "end"):
                    when = row[tag]
                    body += f"<{tag}_date>{_alma_date(when)}</{tag}_date>" if isinstance(when, date) else ""
                addresses.append(f'<address preferred="{flag}" segment_type="External">{body}'
                                 f"<address_types><address_type>{kind}</address_type></address_types></address>")
            email = str(row["email"])
            if email and self.options.scrub_emails:
                self.stats.emails_scrubbed += 1
                email = f"{re.sub(r'[^A-Za-z0-9._-]', '_', primary_id)}@{self.options.scrub_domain}"
            if email and email.lower() not in seen_emails:
                seen_emails.add(email.lower())
                flag = "true" if not emails else "false"
                emails.append(f'<email preferred="{flag}" segment_type="External">{self._el("email_address", email)}'
                              f"<email_types><email_type>{_EMAIL_TYPES.get(kind, 'alternative')}</email_type>"
                              "</email_types></email>")
            phone = str(row["phone"])
            if phone and phone not in seen_phones:
                seen_phones.add(phone)
                flag = "true" if not phones else "false"
                ptype = "mobile" if _MOBILE.match(re.sub(r"[\s-]", "", phone)) else _PHONE_TYPES.get(kind, "home")
                phones.append(f'<phone preferred="{flag}" preferred_sms="false" segment_type="External">'
                              f'{self._el("phone_number", phone)}'
                              f"<phone_types><phone_type>{ptype}</phone_type></phone_types></phone>")
        if not (addresses or emails or phones):
            return ""
        return ("<contact_info>"
                + (f"<addresses>{''.join(addresses)}</addresses>" if addresses else "")
                + (f"<emails>{''.join(emails)}</emails>" if emails else "")
                + (f"<phones>{''.join(phones)}</phones>" if phones else "")
                + "</contact_info>")

    def _identifiers(self, rows: list[dict[str, object]]) -> str:
        out = []
        for row in sorted(rows, key=lambda r: str(r["key"])):
            key = str(row["key"])
            id_type, value = self.options.identifier_types.get(key[:2]), key[2:].strip()
            if id_type is None or not value:
                self.stats.identifiers_skipped += 1
                continue
            out.append(f'<user_identifier segment_type="External"><id_type>{self.text(id_type)}</id_type>'
                       f'{self._el("value", value)}<status>ACTIVE</status></user_identifier>')
        return f"<user_identifiers>{''.join(out)}</user_identifiers>" if out else ""

    def _notes(self, primary_id: str, delinquency: str, identifiers: list[dict[str, object]]) -> str:
        notes = []
        if delinquency:
            notes.append(self._note("CIRCULATION", delinquency))
        secret = self.options.pin_hash_secret
        pin = next((str(r["pin"]) for r in sorted(identifiers, key=lambda r: str(r["key"])) if r["pin"]), "")
        if secret and pin:
            digest = hmac.new(secret.encode(), f"{primary_id}\0{pin}".encode(), hashlib.sha256).hexdigest()
            notes.append(self._note("OTHER", f"aleph-pin-hmac-sha256:{digest}"))
            self.stats.pins_hashed += 1
        return f"<user_notes>{''.join(notes)}</user_notes>" if notes else ""

    def _note(self, note_type: str, text: str) -> str:
        return (f'<user_note segment_type="External"><note_type>{note_type}</note_type>'
                f'{self._el("note_text", text)}<user_viewable>false</user_viewable>'
                "<popup_note>false</popup_note></user_note>")
