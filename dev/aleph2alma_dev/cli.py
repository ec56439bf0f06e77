"""``aleph2alma-dev`` (or ``python -m aleph2alma_dev``): the demo library and the Alma API emulator.

    aleph2alma-dev demo generate --scale tiny --seed 1 --out demo-data
    aleph2alma-dev demo form [--out include/config/demo/form]
    aleph2alma-dev demo alma --port 8765

A bad input gives one line on standard error and a non-zero exit, never a traceback, as
with the product's ``aleph2alma`` command.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

EXIT_INPUT = 3


def _demo_generate(args: argparse.Namespace) -> int:
    from aleph2alma_dev.demo.generator import generate

    summary = generate(args.out, scale=args.scale, seed=args.seed, db_url=args.db_url)
    print(json.dumps(summary["counts"], ensure_ascii=False))
    return 0


def _demo_form(args: argparse.Namespace) -> int:
    from aleph2alma.alma.form import form_dir, write_form
    from aleph2alma_dev.demo.form import demo_form

    out = args.out or form_dir("demo")
    write_form(demo_form(), out)
    print(f"demo migration form written to {out}")
    return 0


def _demo_alma(args: argparse.Namespace) -> int:
    from aleph2alma_dev.demo.alma_emulator import main as emulator_main

    return int(emulator_main(args.rest) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aleph2alma-dev", description="Demo and development tools of aleph2alma (not the product)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the demo library and the Alma API emulator").add_subparsers(
        dest="demo_command", required=True
    )
    gen = demo.add_parser("generate", help="generate a BNU-shaped demo Aleph library")
    gen.add_argument("--scale", default="tiny", choices=["tiny", "small", "bnu"])
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--db-url", help="write the Z-table replica here instead of <out>/replica.sqlite")
    gen.set_defaults(run=_demo_generate)
    form = demo.add_parser("form", help="write the demo library's filled migration form")
    form.add_argument("--out", type=Path)
    form.set_defaults(run=_demo_form)
    alma = demo.add_parser("alma", help="run the Alma API emulator (an emulator, not Alma)")
    alma.add_argument("rest", nargs=argparse.REMAINDER, help="emulator options, e.g. --port 8765")
    alma.set_defaults(run=_demo_alma)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["demo", "alma"]:  # the emulator parses its own options
        return _demo_alma(argparse.Namespace(rest=argv[2:]))
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, OSError, LookupError) as exc:
        # Domain errors (GeneratorError, FormError, SettingsError, …) say what is wrong and where.
        print(f"aleph2alma-dev: error: {exc}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    sys.exit(main())
