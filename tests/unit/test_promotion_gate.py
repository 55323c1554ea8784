"""The promotion gate's rule (pure logic) and its refusal before anything is loaded."""

from __future__ import annotations

import socket

import pytest

from pipelines import promote, promotion_gate
from pipelines.promotion_gate import check_gate, combined, refusal

FIGURES = {"model_version": "v2", "agreement": 0.96, "rows_compared": 500}


def test_no_gate_by_default():
    assert refusal(None, "2", 0.0) is None


def test_the_gate_accepts_the_shadowed_version_at_or_above_the_share():
    assert refusal(FIGURES, "2", 0.95) is None
    assert refusal(FIGURES, "2", 0.96) is None


def test_the_gate_refuses_and_says_why():
    assert "96.00% of 500 reviews, below the required 97.00%" in refusal(FIGURES, "2", 0.97)
    assert "challenger is v2, not v3" in refusal(FIGURES, "3", 0.95)
    assert "shadows no challenger" in refusal(None, "2", 0.95)
    nothing = {"model_version": "v2", "agreement": None, "rows_compared": 0}
    assert "compared no review" in refusal(nothing, "2", 0.95)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_compared_review_is_not_enough_evidence():
    one = {"model_version": "v2", "agreement": 1.0, "rows_compared": 1}
    assert "compared 1 reviews of v2 with production, fewer than the 200" in refusal(one, "2", 0.95)
    assert refusal({**one, "rows_compared": 200}, "2", 0.95) is None
    assert refusal(one, "2", 0.95, minimum=1) is None


def test_several_replicas_figures_are_added_up_and_must_shadow_the_same_version():
    a = {"model_version": "v2", "agreement": 1.0, "rows_compared": 150}
    b = {"model_version": "v2", "agreement": 0.9, "rows_compared": 150}
    both = combined([a, b])
    assert both["rows_compared"] == 300 and both["agreement"] == pytest.approx(0.95)
    assert refusal(both, "2", 0.95) is None
    assert refusal(combined([a]), "2", 0.95) is not None  # one replica: too few reviews
    other = {"model_version": "v3", "agreement": 1.0, "rows_compared": 500}
    assert "not v2" in refusal(combined([a, other]), "2", 0.95)
    assert "not v2" in refusal(combined([a, None]), "2", 0.95)
    assert combined([None, None]) is None


def test_every_replica_is_asked_and_a_key_is_sent(monkeypatch):
    seen = []
    replicas = {
        "http://gw-1:8000": {"model_version": "v2", "agreement": 1.0, "rows_compared": 120},
        "http://gw-2:8000": {"model_version": "v2", "agreement": 0.9, "rows_compared": 100},
    }

    def info(url, timeout):
        seen.append(url)
        return {"challenger": replicas[url]}

    monkeypatch.setattr(promotion_gate, "info", info)
    assert check_gate("http://gw-1:8000, http://gw-2:8000", "2", 0.9) is None
    assert seen == ["http://gw-1:8000", "http://gw-2:8000"]
    assert "fewer than the 200" in check_gate("http://gw-1:8000", "2", 0.9)


def test_an_unreachable_gateway_refuses(capsys):
    url = f"http://127.0.0.1:{_closed_port()}"
    assert "cannot read" in check_gate(url, "2", 0.95)
    assert check_gate(url, "2", 0.0) is None  # no gate: the gateway is not asked
    code = promote.main(["--version", "2", "--require-agreement", "0.95", "--gateway-url", url])
    assert code == 1
    assert "Not promoted: the gate needs the gateway's shadow figures" in capsys.readouterr().err
