"""Operations of a worker host: the worker process, its companion (sidecar), the metrics server, spool retention, liveness."""
