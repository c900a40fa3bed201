"""The queue: the Celery app, enqueueing, the thin tasks, and the sweep for lost jobs."""
