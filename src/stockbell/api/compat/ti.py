"""Seed surface adapter (being built; see issue 4)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
