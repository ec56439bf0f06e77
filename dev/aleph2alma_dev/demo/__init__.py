"""Synthetic Aleph library for demos and tests (and, later, the Alma API emulator)."""
