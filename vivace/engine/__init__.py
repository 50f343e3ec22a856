"""The engine: flows, tasks, states, futures, the run context, retries, timeouts, run logging."""
