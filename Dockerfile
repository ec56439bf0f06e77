# The image every Airflow component of the distributed deployment runs: the runtime set only
# (requirements.lock: no moto or test tools) and the product package (include/ only; the
# dev tooling in dev/ is not copied).
FROM apache/airflow:3.3.2-python3.11
# A Chinese font for the status report's Chinese PNG (aleph2alma.plan.charts; without one it is skipped).
USER root
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends fonts-wqy-microhei \
    && rm -rf /var/lib/apt/lists/*
USER airflow
COPY --chown=airflow:root requirements.lock /opt/aleph2alma/
COPY --chown=airflow:root include /opt/aleph2alma/include
RUN pip install --no-cache-dir -r /opt/aleph2alma/requirements.lock
# aleph2alma is imported from include/ rather than installed: pyproject.toml also declares the dev
# package and its console script, which are not in the image. The same as .venv-runtime, where
# tests/dags/test_runtime_imports.py loads the DAGs; docker-compose.yaml mounts ./include here for
# live edits. The product's command line: python -m aleph2alma.cli ...
ENV PYTHONPATH=/opt/aleph2alma/include
