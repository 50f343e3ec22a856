"""Workers: start deployment runs claimed from the server's work queues on some infrastructure.

``vivace worker start --queue default`` runs a :class:`~vivace.workers.worker.Worker`; it talks to
the server through :class:`~vivace.workers.api.WorkerAPI` (``/api/workers``), and every run it
launches executes ``python -m vivace.engine <flow_run_id>``.
"""

from vivace.workers.worker import Worker

__all__ = ["Worker"]
