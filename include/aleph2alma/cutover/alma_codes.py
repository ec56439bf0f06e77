"""Do the Alma libraries and locations the migration form maps to exist in the Alma environment?

Read through Alma's configuration API (``AlmaClient.libraries`` and ``locations``): every
``alma_library_code`` of the form's libraries and locations tabs must be a library, and every
(``alma_library_code``, ``alma_location_code``) of the locations tab a location of that library.
An Alma that does not answer (no permission for the conf API, not reachable) leaves the check
*not run*, said as such in the preflight report: the library checks it in Alma by hand. Item
policies, user groups, fee types and the other code tables are not read here.
"""

from __future__ import annotations

from typing import Any, Protocol

ALMA_CODES_CHECK = "alma_codes_exist"


class AlmaConfiguration(Protocol):
    def libraries(self) -> list[dict]: ...

    def locations(self, library: str) -> list[dict]: ...


def wanted_codes(form: Any) -> tuple[set[str], set[tuple[str, str]]]:
    """The Alma libraries and (library, location) pairs the form maps Aleph's codes to."""
    tabs = form.tabs
    libraries = {str(c) for c in tabs["libraries"]["alma_library_code"] if str(c).strip()}
    locations = {
        (str(lib), str(loc))
        for lib, loc in zip(
            tabs["locations"]["alma_library_code"], tabs["locations"]["alma_location_code"], strict=True
        )
        if str(lib).strip() and str(loc).strip()
    }
    return libraries | {lib for lib, _ in locations}, locations


def missing_codes(form: Any, alma: AlmaConfiguration) -> list[str]:
    """The form's Alma libraries and locations that Alma does not have (``LIB`` or ``LIB/LOC``)."""
    libraries, locations = wanted_codes(form)
    existing = {str(lib.get("code")) for lib in alma.libraries()}
    missing = sorted(libraries - existing)
    for library in sorted(libraries & existing):
        have = {str(loc.get("code")) for loc in alma.locations(library)}
        missing += sorted(f"{library}/{loc}" for lib, loc in locations if lib == library and loc not in have)
    return missing
