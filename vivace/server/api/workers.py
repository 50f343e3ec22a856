"""Placeholder: filled by the deployments work (issue 6)."""

from fastapi import APIRouter

router = APIRouter()
