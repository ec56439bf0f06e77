"""Delivery: the package Ex Libris loads, and its transfer to the migration file-transfer server or S3.

- :mod:`aleph2alma.delivery.package` builds one deterministic zip from the committed ``alma/``
  manifests of a run and the filled migration form;
- :mod:`aleph2alma.delivery.transfer` publishes it over SFTP (upload, verify, atomic rename)
  and/or copies it to an S3 prefix, verifying the far side every time.
"""
