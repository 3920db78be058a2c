"""The report: its summary table and its provenance page."""
