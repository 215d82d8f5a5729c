"""Fixtures for the jobs area (owned by whoever builds it)."""

from __future__ import annotations
