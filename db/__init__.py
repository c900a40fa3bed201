"""The results database (SQLAlchemy 2): tables, engines and sessions, migrations, queries. No torch, no Celery."""

from db.engine import current_revision, dispose_all, get_engine, session_scope, upgrade
from db.migrate import SchemaError, head_revision
from db.ob_reports import (
    SonographerBiometry,
    StudyDating,
    get_ob_report,
    ob_report_fetuses,
    record_malformed_report,
    study_dating,
    study_fetus_count,
    study_sonographer_hc,
    upsert_ob_report,
)
from db.report_facts import (
    AgreementPair,
    agreement_pairs,
    set_report_facts,
    studies_owing_report_facts,
    study_measured_rows,
)
from db.repository import (
    ROW_DICT_FIELDS,
    create_job,
    get_job,
    job_counts,
    job_dict,
    measurement_counts,
    measured_uids,
    pending_reports,
    plane_counts,
    query_measurements,
    row_dict,
    set_job_status,
    set_sr_status,
    stale_jobs,
    upsert_measurement,
)
from db.reviews import (
    EFFECTIVE_COLUMNS,
    ReviewedHC,
    ReviewedRow,
    confirmed_rows,
    effective_values,
    latest_review,
    record_review,
    review_dict,
    review_worklist,
    reviewed_hcs,
    reviews_of,
)
from db.tables import (
    FINISHED_JOB_STATUSES,
    JOB_STATUS_OF,
    REPORTABLE_STATUSES,
    UNFINISHED_JOB_STATUSES,
    Base,
    Job,
    JobStatus,
    Measurement,
    MeasurementStatus,
    ObReportFetusRow,
    ObReportRow,
    ObReportStatus,
    Review,
    ReviewDecision,
    SrStatus,
)

__all__ = [
    "FINISHED_JOB_STATUSES", "JOB_STATUS_OF", "REPORTABLE_STATUSES", "UNFINISHED_JOB_STATUSES", "Base", "Job", "JobStatus", "Measurement", "MeasurementStatus", "SchemaError", "SrStatus", "create_job",
    "current_revision", "dispose_all", "get_engine", "get_job", "head_revision", "job_counts", "job_dict", "measurement_counts", "measured_uids", "plane_counts",
    "pending_reports", "query_measurements", "row_dict", "session_scope", "set_job_status", "set_sr_status",
    "stale_jobs", "upgrade", "upsert_measurement",
    # scanners' OB-GYN reports (db.ob_reports)
    "ObReportFetusRow", "ObReportRow", "ObReportStatus", "SonographerBiometry", "StudyDating", "get_ob_report",
    "ob_report_fetuses", "record_malformed_report", "study_dating", "study_fetus_count", "study_sonographer_hc",
    "upsert_ob_report",
    # the measurement rows a report speaks to (db.report_facts)
    "AgreementPair", "agreement_pairs", "set_report_facts", "studies_owing_report_facts", "study_measured_rows",
    # people's reviews of measurements (db.reviews)
    "EFFECTIVE_COLUMNS", "ROW_DICT_FIELDS", "Review", "ReviewDecision", "ReviewedHC", "ReviewedRow",
    "confirmed_rows", "effective_values", "latest_review", "record_review", "review_dict", "review_worklist",
    "reviewed_hcs", "reviews_of",
]
