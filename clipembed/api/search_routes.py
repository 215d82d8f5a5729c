"""HTTP search endpoints (``GET /search``, ``GET /clips/{id}/similar``)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
