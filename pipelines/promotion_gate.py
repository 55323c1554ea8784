"""The promotion gate of the `promote` entry point: `-P require_agreement=0.95` moves
`production` only if the gateway's shadow has compared the version with production and found
them agreeing on at least that share of the reviews.

The figures come from the gateway's `/info` (`challenger`), so the version must be the
challenger the gateway shadows (or runs as a canary) when the gate is asked. 0 (the default)
means no gate. `GATEWAY_API_KEY` is sent when the gateway requires a key.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

DEFAULT_GATEWAY = "http://127.0.0.1:8000"


def refusal(challenger: dict | None, version: str, required: float) -> str | None:
    """Why the gate refuses (None: it lets the version through)."""
    if required <= 0:
        return None
    wanted = f"v{version}"
    if challenger is None:
        return f"the gateway shadows no challenger, so there is no agreement figure for {wanted}"
    if challenger.get("model_version") != wanted:
        return (
            f"the gateway's challenger is {challenger.get('model_version')}, not {wanted}: "
            f"point the challenger alias at version {version} and let it see traffic first"
        )
    agreement, compared = challenger.get("agreement"), challenger.get("rows_compared", 0)
    if agreement is None or not compared:
        return f"the shadow has compared no review of {wanted} with production yet"
    if agreement < required:
        return (
            f"{wanted} agrees with production on {agreement:.2%} of {compared} reviews, "
            f"below the required {required:.2%}"
        )
    return None


def challenger_figures(gateway_url: str, timeout: float = 10.0) -> dict | None:
    """The gateway's `/info` → `challenger`; raises OSError when it cannot be read."""
    request = urllib.request.Request(f"{gateway_url.rstrip('/')}/info")
    key = os.environ.get("GATEWAY_API_KEY")
    if key:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.load(response).get("challenger")
    except (urllib.error.URLError, ValueError) as error:
        raise OSError(f"cannot read {gateway_url}/info: {error}") from None


def check_gate(gateway_url: str, version: str, required: float) -> str | None:
    """Why the version may not be promoted, or None."""
    if required <= 0:
        return None
    try:
        figures = challenger_figures(gateway_url)
    except OSError as error:
        return f"the gate needs the gateway's shadow figures, and {error}"
    return refusal(figures, version, required)
