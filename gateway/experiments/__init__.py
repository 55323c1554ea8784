"""Experiments: a challenger version beside production, mirrored (shadow) or answering a share
of the traffic (canary). Built on serving."""
