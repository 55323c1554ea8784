"""Property-based fuzzing of the gateway from its own OpenAPI schema (schemathesis).

Every operation in the schema gets generated requests, valid and invalid; every answer must
be free of server errors and match the schema: a documented status code and content type,
a body of the documented shape, and 401 whenever the key is left out.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.load import REPORT, Row
from tests.reliability.conftest import AUTH

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    ignored_auth,
]
SEEN: Counter = Counter()
LONGEST = [0.0]


@pytest.fixture(scope="module")
def operations(gw):
    schema = schemathesis.openapi.from_url(f"{gw.url}/openapi.json")
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


LABELS = [
    "GET /health",
    "GET /ready",
    "GET /info",
    "POST /predict",
    "POST /predict/batch",
    "POST /invocations",
    "POST /feedback",
    # The Open Inference Protocol (gateway/api/inference_protocol.py).
    "GET /v2/health/live",
    "GET /v2/health/ready",
    "GET /v2",
    "GET /v2/models/{name}",
    "GET /v2/models/{name}/ready",
    "GET /v2/models/{name}/versions/{version}",
    "GET /v2/models/{name}/versions/{version}/ready",
    "POST /v2/models/{name}/infer",
    "POST /v2/models/{name}/versions/{version}/infer",
]


SIZES = [200, pytest.param(1000, marks=pytest.mark.soak)]
# The /v2 lookups only compare a name and a version: a tenth of the cases finds what there is
# to find. The two infer routes share one handler, and half an operation's budget (their
# nested tensors make a case cost about 150 ms: 200 cases took 63 s on 2 busy cores).
SHARE = {label: 0.1 for label in LABELS if label.startswith("GET /v2")}
SHARE |= {label: 0.25 for label in LABELS if label.startswith("POST /v2")}


@pytest.mark.parametrize("examples", SIZES)
@pytest.mark.parametrize(
    "label,mode",
    [(label, GenerationMode.POSITIVE) for label in LABELS]
    # Operations that take no input have nothing to get wrong.
    + [(label, GenerationMode.NEGATIVE) for label in LABELS if label.startswith("POST")],
)
def test_fuzz(operations, label, mode, examples):
    assert set(operations) == set(LABELS), "the schema changed: fuzz the new operations too"

    @settings(
        max_examples=int(examples * SHARE.get(label, 1)),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operations[label].as_strategy(generation_mode=mode))
    def fuzz(case):
        # Our key, not generated ones: ignored_auth then probes without it and with a bad one.
        for name in list(case.headers or {}):
            if name.lower() in ("authorization", "x-api-key"):
                del case.headers[name]
        started = time.monotonic()
        response = case.call(headers=AUTH, timeout=30)
        LONGEST[0] = max(LONGEST[0], time.monotonic() - started)
        SEEN[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=AUTH)

    fuzz()


@pytest.mark.parametrize("least", [1000, pytest.param(5000, marks=pytest.mark.soak)])
def test_fuzz_sent_enough_cases(gw, least):
    """Runs after the fuzz: enough requests were sent, and the service is still healthy.

    (Per operation and mode at most `examples` cases; those without input stop early.)
    """
    sent = sum(SEEN.values())
    REPORT.append(Row("schemathesis fuzz of the OpenAPI schema", sent, SEEN, LONGEST[0]))
    assert sent >= least, SEEN
    assert not any(status >= 500 for status in SEEN)
    assert gw.health()["status"] == "healthy"
