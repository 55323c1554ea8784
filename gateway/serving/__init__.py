"""Serving: the scoring servers and the calls to them. Which version is live (rollout, with
its launcher and health watcher), the registry and the local model cache, the scoring client
and its micro-batcher. Imports no other room."""
