"""Fixtures for the provider area (owned by whoever builds it)."""

from __future__ import annotations
