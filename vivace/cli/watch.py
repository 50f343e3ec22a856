"""Placeholder: filled by the deployments work (issue 6)."""
