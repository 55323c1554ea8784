"""The promotion gate of the `promote` entry point: `-P require_agreement=0.95` moves
`production` only if the gateways' shadows have compared the version with production on at
least `min_compared` reviews (200 by default) and found them agreeing on at least that share.

The figures come from each gateway's `/info` (`challenger`), so the version must be the
challenger the gateways shadow (or run as a canary) when the gate is asked. Behind a load
balancer, give every replica's address (`-P gateway_url=http://gw-1:8000,http://gw-2:8000`):
their figures are added up, and a replica that shadows another version refuses the gate.
0 (the default) means no gate. `GATEWAY_API_KEY` is sent when the gateways require a key.
"""

from __future__ import annotations

from pipelines.errors import GatewayUnreadable
from pipelines.gateway_info import info

DEFAULT_GATEWAY = "http://127.0.0.1:8000"
MIN_COMPARED = 200


def refusal(
    challenger: dict | None, version: str, required: float, minimum: int = MIN_COMPARED
) -> str | None:
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
    if compared < minimum:
        return (
            f"the shadow has compared {compared} reviews of {wanted} with production, fewer "
            f"than the {minimum} the gate needs (min_compared): let it see more traffic"
        )
    if agreement < required:
        return (
            f"{wanted} agrees with production on {agreement:.2%} of {compared} reviews, "
            f"below the required {required:.2%}"
        )
    return None


def combined(figures: list[dict | None]) -> dict | None:
    """Several replicas' figures as one: the rows they compared added up, the agreement
    weighted by them. Replicas that shadow different versions (or none) give None."""
    versions = {f.get("model_version") if f else None for f in figures}
    if len(versions) != 1 or None in versions:
        return None if versions == {None} else {"model_version": " and ".join(map(str, versions))}
    present = [f for f in figures if f]  # all of them: none gave no version
    rows = sum(f.get("rows_compared", 0) for f in present)
    agreed = sum((f.get("agreement") or 0.0) * f.get("rows_compared", 0) for f in present)
    return {"model_version": versions.pop(), "rows_compared": rows,
            "agreement": agreed / rows if rows else None}  # fmt: skip


def challenger_figures(gateway_urls: str, timeout: float = 10.0) -> dict | None:
    """The `challenger` of every gateway's `/info` (comma-separated addresses), combined;
    raises GatewayUnreadable when one cannot be read."""
    urls = [url.strip() for url in gateway_urls.split(",") if url.strip()]
    return combined([info(url, timeout).get("challenger") for url in urls])


def check_gate(
    gateway_urls: str, version: str, required: float, minimum: int = MIN_COMPARED
) -> str | None:
    """Why the version may not be promoted, or None."""
    if required <= 0:
        return None
    try:
        figures = challenger_figures(gateway_urls)
    except GatewayUnreadable as error:
        return f"the gate needs the gateway's shadow figures, and {error}"
    return refusal(figures, version, required, minimum)
