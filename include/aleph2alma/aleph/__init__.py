"""Aleph side: ALEPHSEQ reader/writer, Z-table schema, extraction sources."""
