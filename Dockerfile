# The image every Airflow component of the distributed deployment runs.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.lock pyproject.toml /opt/aleph2alma/
COPY --chown=airflow:root include /opt/aleph2alma/include
RUN pip install --no-cache-dir -r /opt/aleph2alma/requirements.lock \
 && pip install --no-cache-dir --no-deps -e /opt/aleph2alma
