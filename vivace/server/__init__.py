"""vivace's HTTP server: the history API, the web UI and /metrics, over the run-history database.

It is never in the task path: flows record straight into the database whether or not a server
runs. Needs the ``server`` extra (``pip install 'vivace[server]'``).
"""

from __future__ import annotations
