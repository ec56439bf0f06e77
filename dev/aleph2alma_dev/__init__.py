"""aleph2alma_dev: the demo and development tooling around the migration, never the product.

The synthetic Aleph library generator, the Alma API emulator and the demo runner
(:mod:`aleph2alma_dev.demo`), the embedded Airflow stack (:mod:`aleph2alma_dev.devstack`) and
its REST client (:mod:`aleph2alma_dev.airflow_api`). It imports :mod:`aleph2alma`; nothing in
``aleph2alma``, ``dags/`` or ``plugins/`` imports it (tests/test_layers.py), and the runtime
requirements (requirements.lock, the Docker image) do not include what it needs (moto, Flask).
"""
