"""Measuring: the pipeline joining dicom_io, models and db, the head-plane gate wiring, dating, manifests, SR export."""
