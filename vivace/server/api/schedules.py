"""Placeholder: filled in by the issue-7 work on schedules."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
