"""The migration as a project plan: phases, key nodes, the roles who answer its gates, and what
actually happened, read back from the runs.

- ``catalog``: what this product knows of every migration (its phases, key nodes and gates);
- ``model``: a migration's ``plan.yaml`` (dates, roles, gate owners), validated on load;
- ``actuals``: key nodes reached and phase runs ended, recorded in S3 by the runs themselves;
- ``status``: the control room's view (plan against actual, counts, trends) built from S3 and,
  on the page, from Airflow's API;
- ``charts`` and ``report``: that view drawn (matplotlib) and written as a page or a report.
"""
