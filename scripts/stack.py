"""`make airflow`: the embedded stack with the Airflow UI on localhost:8080, until Ctrl-C."""

import signal
import sys
from pathlib import Path

from aleph2alma.demo.runner import stack_for
from aleph2alma.devstack import PROJECT_ROOT


def main() -> int:
    data = PROJECT_ROOT / "demo-data"
    if not (data / "replica.sqlite").exists():
        from aleph2alma.demo.generator import generate

        generate(data, scale="tiny", seed=1)
    stack = stack_for(Path(data), api_port=8080)
    stack.start()
    print(f"Airflow UI: {stack.api_url}  user: admin  password: {stack.admin_password()}")
    print(f"S3 endpoint: {stack.s3_endpoint}  bucket: aleph2alma-artifacts   (Ctrl-C stops everything)")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
