"""Drift statistics, not a running monitor: the reference a model carries and the PSI drift and
accuracy estimate computed against it, shared by training (which logs the reference), the
gateway's live monitor (gateway/observability/live_monitor.py) and the monitoring job
(pipelines/monitoring_job.py)."""
