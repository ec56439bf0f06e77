"""`make airflow`: the embedded stack with the Airflow UI on localhost:8080, until Ctrl-C or SIGTERM.

`make airflow-distributed` (``--executor celery``): the same, in docker-compose.yaml's shape:
CeleryExecutor with ``--workers`` Celery workers (one by default), a throw-away PostgreSQL metadata
database (dropped on Ctrl-C) and a Redis database as broker, each Airflow component its own process,
logs in ``.stack/``.
"""

import argparse
import signal
import sys
from pathlib import Path

from aleph2alma.alma.rate import ALMA_POOL, ALMA_POOL_DESCRIPTION, ALMA_POOL_SLOTS
from aleph2alma_dev.demo.runner import restore_bucket, stack_for
from aleph2alma_dev.devstack import (
    EXECUTORS,
    LOOPBACK,
    PG_ADMIN_URL,
    PROJECT_ROOT,
    REDIS_URL,
    distributed_problems,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/stack.py", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    parser.add_argument(
        "--executor",
        default="local",
        choices=EXECUTORS,
        help="local: airflow standalone (SQLite); celery: the distributed mode",
    )
    parser.add_argument("--port", type=int, default=8080, help="the Airflow UI/API port")
    parser.add_argument(
        "--host",
        default=LOOPBACK,
        help="the address the Airflow UI/API listens on (default: loopback only; 0.0.0.0 for all)",
    )
    parser.add_argument(
        "--pg-admin-url",
        default=PG_ADMIN_URL,
        help="celery: where the throw-away metadata database is created",
    )
    parser.add_argument(
        "--redis-url", default=REDIS_URL, help="celery: the Redis server (an empty DB is used)"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="celery: each worker's concurrency")
    parser.add_argument("--workers", type=int, default=1, help="celery: how many Celery workers to start")
    parser.add_argument(
        "--state-dir", type=Path, default=PROJECT_ROOT / ".stack", help="where the stack keeps its state"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=PROJECT_ROOT / "demo-data",
        help="the demo library (generated at tiny scale if missing)",
    )
    parser.add_argument(
        "--demo-output",
        type=Path,
        default=PROJECT_ROOT / "demo-output",
        help="where `make demo` kept its bucket's state and reports (loaded into S3 if there)",
    )
    args = parser.parse_args(argv)

    kwargs: dict = {"api_port": args.port, "listen_host": args.host, "state_dir": args.state_dir}
    if args.executor == "celery":
        problems = distributed_problems(args.pg_admin_url, args.redis_url)
        if problems:
            print(
                "The distributed mode needs PostgreSQL and Redis:\n  " + "\n  ".join(problems),
                file=sys.stderr,
            )
            return 2
        kwargs.update(
            executor="celery",
            pg_admin_url=args.pg_admin_url,
            redis_url=args.redis_url,
            worker_concurrency=args.concurrency,
            workers=args.workers,
        )
    data = args.data
    if not (data / "replica.sqlite").exists():
        from aleph2alma_dev.demo.generator import generate

        generate(data, scale="tiny", seed=1)
    stack = stack_for(Path(data), **kwargs)
    # SIGTERM (a service manager, `kill`) and SIGHUP (the terminal closed) stop everything as
    # Ctrl-C does: the stack's components run in their own sessions and would outlive this one.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        stack.start()
        # Alma tasks run in this pool; without it a test load waits at api_load for ever.
        stack.airflow_client().ensure_pool(ALMA_POOL, ALMA_POOL_SLOTS, ALMA_POOL_DESCRIPTION)
        print(f"Airflow UI: {stack.api_url}  user: admin  password: {stack.admin_password()}")
        print(f"S3 endpoint: {stack.s3_endpoint}  bucket: aleph2alma-artifacts   (Ctrl-C stops everything)")
        restored = restore_bucket(stack, args.demo_output)
        if restored:
            print(f"Loaded {restored} objects of the last `make demo` ({args.demo_output}/bucket/) into S3:")
            print(f"  its runs, plan actuals and reports: {stack.api_url}/plugin/migration-control-room")
        if stack.distributed:
            nodes = ", ".join(f"{stack.worker_node(i)}@<host>" for i in range(stack.workers))
            print(f"Executor: CeleryExecutor, workers {nodes} (concurrency {stack.worker_concurrency} each)")
            print(f"Metadata DB + result backend: {stack.sql_alchemy_conn} (dropped on stop)")
            print(f"Broker: {stack.broker_url} (flushed on stop)   logs: {stack.state_dir}/*.log")
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the stop short
        stack.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.exit(main())
