"""Live ingest: the C-STORE listener, the drop-folder watcher, and the spool they both write to."""

from worker.ingest.intake import Intake, accept_instance, is_ultrasound
from worker.ingest.spool import spool_path, write_atomic, write_instance

__all__ = ["Intake", "accept_instance", "is_ultrasound", "spool_path", "write_atomic", "write_instance"]
