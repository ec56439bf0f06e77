"""Known vulnerabilities in the pinned requirements (``make test`` runs it; ``make audit`` alone).

Audits requirements-dev.lock, which pins every runtime package at the runtime lock's version
too. Findings fail unless supply-chain-accepted.toml accepts them with a reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aleph2alma_dev.supply_chain import audit, render

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements-dev.lock")
    parser.add_argument("--accepted", type=Path, default=ROOT / "supply-chain-accepted.toml")
    args = parser.parse_args()
    pip_audit = str(Path(sys.executable).with_name("pip-audit"))
    try:
        verdict = audit(args.lock, args.accepted, pip_audit)
    except Exception as error:  # noqa: BLE001 - one line for the operator, not a traceback
        print(f"supply chain: could not audit: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    print(render(verdict))
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
