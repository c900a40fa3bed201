"""Revisions, one file each, oldest first: ``NNNN_what.py`` with ``revision = "NNNN"``."""
