"""After go-live: clean-up worklists, the archive of the final snapshot, the decommission checklist.

- ``worklists``: what librarians clean up in Alma (test patrons to purge, items without
  barcodes, records Aleph suppressed, items still in acquisition, loans whose Aleph dates
  or status Alma could not keep), from an extract and its transform;
- ``archive``: the final extract and every delivered package copied, checksum-verified, into
  ``<migration id>/archive/<label>/`` with a storage class and a retention;
- ``checklist``: the decommission checklist report from the checks the DAG ran.
"""
