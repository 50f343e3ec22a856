"""Deployments: a flow the server can run on demand, its code in storage, its runs started by
workers. ``Flow.deploy`` and ``vivace deploy`` make them; ``run_deployment`` and the API create
their runs; ``vivace worker start`` runs them.
"""
