"""Validation rules (FIX / REVIEW / INFO) and reports."""
