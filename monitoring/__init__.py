"""Watching a served model: the statistics the gateway, training and the monitor job share."""
