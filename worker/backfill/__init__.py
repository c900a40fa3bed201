"""Backfill: measure an archive (folder tree, DIMSE PACS, DICOMweb) on the low-priority queue."""

from __future__ import annotations

from pathlib import Path

from worker.backfill.runner import (
    BackfillSummary,
    Candidate,
    Source,
    current_model_version,
    run_backfill,
)
from worker.core.peers import parse_dimse_url
from worker.core.settings import Settings

__all__ = ["BackfillSummary", "Candidate", "Source", "current_model_version", "open_source", "run_backfill"]


def open_source(spec: str, settings: Settings, retrieve: str = "get", move_ae: str | None = None,
                move_port: int | None = None) -> Source:
    """The source named by ``spec``: ``http(s)://...`` DICOMweb, ``dimse://AET@host:port``, or a folder.

    Raises:
        FileNotFoundError: a folder that does not exist.
        ValueError: a malformed DIMSE address.
    """
    # Each source's module is imported only when asked for: dicomweb-client and pynetdicom are heavy.
    if spec.startswith(("http://", "https://")):
        from worker.backfill.dicomweb import DicomwebSource, dicomweb_session

        return DicomwebSource(spec, settings.spool_dir, session=dicomweb_session(settings),
                              max_instance_bytes=int(settings.max_instance_mb * (1 << 20)))
    if spec.startswith("dimse://") or ("@" in spec and not Path(spec).exists()):
        from worker.backfill.dimse import DimseSource

        called, host, port = parse_dimse_url(spec)
        return DimseSource(host, port, called, settings.ae_title, settings.spool_dir, retrieve=retrieve,
                           move_ae=move_ae, move_port=move_port, settings=settings)
    from worker.backfill.folder import FolderSource

    return FolderSource(Path(spec))
