"""Fixtures for the search area (owned by whoever builds it)."""

from __future__ import annotations
