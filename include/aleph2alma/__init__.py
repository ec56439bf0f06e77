"""aleph2alma: the domain package behind the Aleph500 → Alma migration DAGs.

Plain, typed Python; importable and testable without a running Airflow.
"""

__version__ = "0.1.0"
