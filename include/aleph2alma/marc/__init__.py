"""Bib and holdings transforms (MARC 21 and CNMARC) and encoding repair."""
