"""Observability: what the gateway answered and how it went. The prediction log and its files,
feedback labels, the live monitor's gauges, the Prometheus metrics."""
