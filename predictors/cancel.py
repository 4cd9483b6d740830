"""Cancelling a request's work between tiles or faces."""

from __future__ import annotations


class Cancelled(Exception):
    """The request's client went away or its deadline passed; its work stops here."""
