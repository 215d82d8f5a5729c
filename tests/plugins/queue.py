"""Fixtures for the queue area (owned by whoever builds it)."""

from __future__ import annotations
