"""Composition and runtime: settings, the pipeline joining dicom_io/models/db, the Celery app and
tasks, enqueueing and sweeping, the ``fetalhc`` CLI, the demo and the benchmark."""
