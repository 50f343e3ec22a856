"""Placeholder: filled in by the issue-7 work on notifications."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
