"""One part of the demo library, written in its own process from a saved plan.

The generator runs its four independent parts (two BIB libraries, the HOL library, the
replica database) as ``python -m aleph2alma_dev.demo.worker <plan.npz> <task JSON>`` at the
larger scales: plain subprocesses need neither fork (unsafe beside threads) nor a
``__main__`` guard in whatever script called ``generate``. Smaller scales run the same
``run_task`` in-process.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from aleph2alma_dev.demo.plan import Plan, load_plan


def run_task(plan: Plan, task: dict[str, Any]) -> dict[str, Any]:
    """Write one part; returns ``{"name", "result", "seconds", "cpu_seconds"}``."""
    started, cpu = time.perf_counter(), time.process_time()
    kind = task["kind"]
    libraries = (task["libraries"][0], task["libraries"][1]) if "libraries" in task else ("", "")
    result: Any
    # imported per kind: a worker process starts faster without what it does not use
    if kind == "bibs":
        from aleph2alma_dev.demo import marc

        result = marc.write_bibs(plan, task["lib"], task["code"], task["cnmarc"], Path(task["path"]))
    elif kind == "holdings":
        from aleph2alma_dev.demo import marc

        result = marc.write_holdings(plan, libraries, task["code"], Path(task["path"]))
    elif kind == "db":
        from aleph2alma_dev.demo import replica

        result = replica.write_replica(plan, task["db_url"], task["schemas"], task["code"], libraries)
    else:
        raise ValueError(f"unknown demo task kind {kind!r}; known: bibs, holdings, db")
    return {
        "name": f"{kind} {task['code']}",
        "result": result,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m aleph2alma_dev.demo.worker <plan.npz> <task JSON>", file=sys.stderr)
        return 2
    print(json.dumps(run_task(load_plan(Path(argv[0])), json.loads(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
