"""The gateway's `/info`, read by the jobs that judge (`monitor`) or promote what it serves.

`GATEWAY_API_KEY` is sent when set: with keys on (Compose always sets them), `/info` answers
401 without one, and a job that guessed instead would judge or promote the wrong version.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from pipelines.errors import GatewayUnreadable, KeyRefused


def info(gateway_url: str, timeout: float = 10.0) -> dict:
    url = f"{gateway_url.rstrip('/')}/info"
    request = urllib.request.Request(url)
    key = os.environ.get("GATEWAY_API_KEY")
    if key:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            given = "refused the key in" if key else "needs a key: set"
            message = f"{url} answered {error.code}: the gateway {given} GATEWAY_API_KEY"
            raise KeyRefused(message) from None
        raise GatewayUnreadable(f"cannot read {url}: {error}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise GatewayUnreadable(f"cannot read {url}: {error}") from None
    if not isinstance(answer, dict):
        raise GatewayUnreadable(f"{url} did not answer as the gateway does")
    return answer
