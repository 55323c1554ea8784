"""The sentiment gateway: the spec's API in front of MLflow's scoring server."""

__version__ = "0.1.0"
