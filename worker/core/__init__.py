"""Runtime foundations every room of worker/ stands on: settings, logs, CPUs, file lists, DICOM peers, metrics counters."""
