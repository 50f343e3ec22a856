"""The JSON history API, mounted at ``/api``."""
