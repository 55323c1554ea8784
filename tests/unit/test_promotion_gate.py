"""The promotion gate's rule (pure logic) and its refusal before anything is loaded."""

from __future__ import annotations

import socket

from pipelines import promote
from pipelines.promotion_gate import check_gate, refusal

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


def test_an_unreachable_gateway_refuses(capsys):
    url = f"http://127.0.0.1:{_closed_port()}"
    assert "cannot read" in check_gate(url, "2", 0.95)
    assert check_gate(url, "2", 0.0) is None  # no gate: the gateway is not asked
    code = promote.main(["--version", "2", "--require-agreement", "0.95", "--gateway-url", url])
    assert code == 1
    assert "Not promoted: the gate needs the gateway's shadow figures" in capsys.readouterr().err
