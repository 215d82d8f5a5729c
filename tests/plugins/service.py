"""Fixtures for the service area (owned by whoever builds it)."""

from __future__ import annotations
