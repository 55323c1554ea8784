"""The public API against a real gateway, a real scoring server and a real registry."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.gateways import gateway, misbehaving_scoring_server
from tests.servers import free_port

POSITIVE = "This movie was absolutely amazing! The acting was superb."
NEGATIVE = "Terrible movie. Waste of time. Disappointing and boring."
NOT_LOADED = "Model not loaded. Service temporarily unavailable. Please try again later."


def metric(gw, name: str) -> float:
    for line in gw.http.get("/metrics").text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


def test_before_any_model_it_answers_503_and_serves_once_promoted(served):
    before = served.before
    for name in ("predict", "batch", "info", "ready"):
        assert before[name].status_code == 503, name
        assert before[name].json() == {"detail": NOT_LOADED}, name
    assert before["health"].status_code == 200
    health = before["health"].json()
    # The first look at the registry may not have happened yet.
    assert health.pop("registry_reachable") in (None, True)
    assert health == {
        "status": "degraded",
        "model_loaded": False,
        "model_name": "SentimentClassifier",
        "model_version": None,
    }
    assert served.gw.health() == {
        "status": "healthy",
        "model_loaded": True,
        "model_name": "SentimentClassifier",
        "model_version": f"v{served.v1}",
        "registry_reachable": True,
    }
    assert served.gw.http.get("/ready").status_code == 200


def direct(gw, *texts: str) -> list[dict]:
    """The live scoring server's own rows for ``texts``, asked without the gateway."""
    url = gw.http.get("/info").json()["scoring_server"]
    split = {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}
    return httpx.post(f"{url}/invocations", json=split, timeout=30).json()["predictions"]


def test_predict_returns_exactly_the_contract(served):
    gw = served.gw
    positive, negative = gw.predict(POSITIVE), gw.predict(NEGATIVE)
    assert positive.status_code == negative.status_code == 200
    assert set(positive.json()) == {"sentiment", "confidence", "model_version"}
    assert positive.json()["model_version"] == f"v{served.v1}"
    # The model's own answer, neither recomputed nor rounded nor swapped between requests.
    want = direct(gw, POSITIVE, NEGATIVE)
    assert [positive.json()["sentiment"], negative.json()["sentiment"]] == ["positive", "negative"]
    assert [positive.json()["confidence"], negative.json()["confidence"]] == [
        row["confidence"] for row in want
    ]
    assert positive.json()["confidence"] != negative.json()["confidence"]


def test_explain_adds_the_terms_behind_the_decision(served):
    body = served.gw.predict(POSITIVE, explain=True).json()
    assert set(body) == {"sentiment", "confidence", "model_version", "explanation"}
    assert body["explanation"] and set(body["explanation"][0]) == {"term", "weight"}
    assert set(served.gw.predict(POSITIVE, explain=False).json()) == {
        "sentiment",
        "confidence",
        "model_version",
    }


def test_top_terms_sets_how_many_terms_explain_returns(served):
    long_review = f"{POSITIVE} {NEGATIVE} The plot was dull but the music was lovely."
    five = served.gw.predict(long_review, explain=True).json()["explanation"]
    twelve = served.gw.predict(long_review, explain=True, top_terms=12).json()["explanation"]
    assert (len(five), len(twelve)) == (5, 12)
    assert twelve[:5] == five
    batch = served.gw.http.post(
        "/predict/batch", json={"texts": [long_review], "explain": True, "top_terms": 8}
    )
    assert len(batch.json()["predictions"][0]["explanation"]) == 8


def test_batch_keeps_order_in_one_inference_call(served):
    gw = served.gw
    texts = [POSITIVE, NEGATIVE] * 50
    calls = metric(gw, "gateway_scoring_calls_total")
    response = gw.http.post("/predict/batch", json={"texts": texts})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == f"v{served.v1}"
    assert [p["sentiment"] for p in body["predictions"]] == ["positive", "negative"] * 50
    assert set(body["predictions"][0]) == {"sentiment", "confidence"}
    want = [row["confidence"] for row in direct(gw, POSITIVE, NEGATIVE)] * 50
    assert [p["confidence"] for p in body["predictions"]] == want
    assert metric(gw, "gateway_scoring_calls_total") == calls + 1


def test_concurrent_predicts_are_coalesced(served):
    gw = served.gw
    calls = metric(gw, "gateway_scoring_calls_total")
    texts = [POSITIVE if i % 2 else NEGATIVE for i in range(64)]
    limits = httpx.Limits(max_connections=32)
    with (
        httpx.Client(base_url=gw.url, timeout=30, limits=limits) as c,
        ThreadPoolExecutor(32) as pool,
    ):
        answers = list(pool.map(lambda t: c.post("/predict", json={"text": t}), texts))
    assert [a.status_code for a in answers] == [200] * 64
    assert [a.json()["sentiment"] for a in answers] == [
        "positive" if i % 2 else "negative" for i in range(64)
    ]
    # Each answer is its own text's, not a neighbour's from the same batch.
    negative, positive = (row["confidence"] for row in direct(gw, NEGATIVE, POSITIVE))
    assert [a.json()["confidence"] for a in answers] == [
        positive if i % 2 else negative for i in range(64)
    ]
    assert metric(gw, "gateway_scoring_calls_total") - calls < 64


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("", "Input text cannot be empty."),
        (" \n\t ", "Input text cannot be empty."),
        ("x" * 5001, "Input text exceeds maximum length of 5000 characters."),
    ],
)
def test_bad_text_is_400(served, text, detail):
    response = served.gw.predict(text)
    assert (response.status_code, response.json()) == (400, {"detail": detail})


def test_longest_allowed_text_is_scored(served):
    assert served.gw.predict("good " * 1000).status_code == 200


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"texts": []}, "Batch must contain at least one text."),
        ({"texts": ["ok"] * 1001}, "Batch exceeds maximum size of 1000 texts."),
        ({"texts": ["ok", "  "]}, "texts[1]: Input text cannot be empty."),
        ({"texts": ["ok", "ok", 7]}, "texts[2]: must be a string."),
        (
            {"texts": ["y" * 5001]},
            "texts[0]: Input text exceeds maximum length of 5000 characters.",
        ),
    ],
)
def test_bad_batch_is_400_naming_the_index(served, body, detail):
    response = served.gw.http.post("/predict/batch", json=body)
    assert (response.status_code, response.json()) == (400, {"detail": detail})


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": 42},
        {"text": None},
        {"text": ["a"]},
        {"text": {"a": 1}},
        {"review": "x"},
        {"text": "fine", "explain": "yes"},
        {"text": "fine", "explain": True, "top_terms": 0},
        {"text": "fine", "explain": True, "top_terms": 51},
        {"text": "fine", "explain": True, "top_terms": "3"},
        [{"text": "x"}],
    ],
)
def test_wrong_shape_is_422(served, body):
    response = served.gw.http.post("/predict", json=body)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)


def test_invalid_json_is_422(served):
    response = served.gw.http.post(
        "/predict", content=b'{"text": "unfinished', headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()) == (
        422,
        {"detail": "Request body is not valid JSON."},
    )
    assert served.gw.http.post("/predict/batch", json={"texts": "one"}).status_code == 422


@pytest.mark.parametrize(
    "headers",
    [{"content-type": "application/x-www-form-urlencoded"}, {"content-type": "text/plain"}, {}],
    ids=["form", "text", "missing"],
)
def test_wrong_or_missing_content_type_is_415(served, headers):
    for path, body in (("/predict", {"text": "hello"}), ("/predict/batch", {"texts": ["hello"]})):
        request = served.gw.http.build_request(
            "POST", path, content=json.dumps(body).encode(), headers=headers
        )
        assert request.headers.get("content-type") == headers.get("content-type")
        response = served.gw.http.send(request)
        assert (response.status_code, response.json()) == (
            415,
            {"detail": "Content-Type must be application/json."},
        ), path
    with_charset = served.gw.http.post(
        "/predict",
        content=b'{"text": "Great film."}',
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert with_charset.status_code == 200


def test_body_over_the_limit_is_413_announced_or_streamed(served):
    big = json.dumps({"text": "x" * 1_100_000}).encode()
    announced = served.gw.http.post(
        "/predict", content=big, headers={"content-type": "application/json"}
    )
    streamed = served.gw.http.post(
        "/predict",
        content=iter([big[:600_000], big[600_000:]]),
        headers={"content-type": "application/json"},
    )
    for response in (announced, streamed):
        assert response.status_code == 413
        assert response.json() == {"detail": "Request body exceeds the limit of 1000000 bytes."}
    small = served.gw.http.post(
        "/predict",
        content=iter([b'{"text": ', b'"Great film."}']),
        headers={"content-type": "application/json"},
    )
    assert small.status_code == 200


def test_unknown_path_and_method(served):
    assert served.gw.http.get("/nope").status_code == 404
    assert served.gw.http.get("/predict").status_code == 405


def test_info_describes_the_served_version(served):
    info = served.gw.http.get("/info").json()
    assert info["model_name"] == "SentimentClassifier"
    assert info["model_version"] == f"v{served.v1}"
    assert info["model_stage"] == "production"
    assert info["status"] == "ready"
    assert info["mlflow_tracking_uri"].startswith("http://127.0.0.1:")
    assert len(info["run_id"]) == 32
    assert info["metrics"] == {"test_accuracy": 0.84, "test_f1": 0.83}
    assert info["tags"] == {"preset": "tests", "git_commit": "abc1234"}
    assert info["registered_at"].startswith("20")
    assert info["scoring_server"].startswith("http://127.0.0.1:")
    assert (info["registry_reachable"], info["registry_error"]) == (True, None)
    assert info["last_rollout"]["outcome"] == "succeeded"


def test_every_answer_names_the_replica_that_gave_it(served):
    """Behind a load balancer, /info and a header on every answer (errors too) say which
    gateway answered; unnamed, a gateway is <host name>:<port>."""
    gw = served.gw
    name = f"{socket.gethostname()}:{gw.url.rsplit(':', 1)[1]}"
    assert gw.http.get("/info").json()["replica"] == name
    answers = [
        gw.http.get("/info"),
        gw.predict(POSITIVE),
        gw.http.post("/predict", json={"text": ""}),
        gw.http.get("/health"),
        gw.http.get("/nope"),
        gw.http.post("/invocations", content=b"x", headers={"content-type": "text/plain"}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 400, 200, 404, 415]
    assert [a.headers.get("x-gateway-replica") for a in answers] == [name] * len(answers)


def test_invocations_pass_mlflow_format_through(served):
    gw = served.gw
    split = {"dataframe_split": {"columns": ["text"], "data": [[POSITIVE], [NEGATIVE]]}}
    response = gw.http.post("/invocations", json=split)
    assert response.status_code == 200
    assert response.headers["x-model-version"] == f"v{served.v1}"
    assert [p["sentiment"] for p in response.json()["predictions"]] == ["positive", "negative"]
    direct = httpx.post(f"{gw.http.get('/info').json()['scoring_server']}/invocations", json=split)
    assert direct.json() == response.json()
    csv = gw.http.post(
        "/invocations", content=f"text\n{NEGATIVE}\n", headers={"content-type": "text/csv"}
    )
    assert csv.json()["predictions"][0]["sentiment"] == "negative"
    refused = gw.http.post("/invocations", json={"dataframe_records": []})
    assert refused.status_code == 400
    assert "error_code" in refused.json()


@pytest.mark.parametrize(
    ("content", "content_type", "traced"),
    [
        (b'{"dataframe_records": []}', "application/json", False),
        (b'{"dataframe_split": {"columns": ["x"]}}', "application/json", False),
        (b'text\n"a quote never closed\n', "text/csv", True),
    ],
    ids=["no-records", "no-data", "broken-csv"],
)
def test_invocations_errors_keep_code_and_message_but_not_the_stack_trace(
    served, content, content_type, traced
):
    gw = served.gw
    url = gw.http.get("/info").json()["scoring_server"]
    headers = {"content-type": content_type}
    upstream = httpx.post(f"{url}/invocations", content=content, headers=headers, timeout=30)
    assert ("stack_trace" in upstream.json()) is traced, "MLflow's error body changed"
    answer = gw.http.post("/invocations", content=content, headers=headers)
    assert answer.status_code == upstream.status_code == 400
    assert answer.json() == {k: v for k, v in upstream.json().items() if k != "stack_trace"}
    assert {"error_code", "message"} <= set(answer.json())
    assert "Traceback" not in answer.text and "stack_trace" not in answer.text


def test_a_text_with_no_known_terms_is_flagged_and_known_terms_never_shown(served):
    gw = served.gw
    unknown = "这部电影 😀😀"
    single = gw.predict(unknown)
    assert single.status_code == 200
    assert single.json()["no_known_terms"] is True
    assert single.json()["confidence"] == 0.5
    batch = gw.http.post("/predict/batch", json={"texts": [POSITIVE, unknown]}).json()
    assert "no_known_terms" not in batch["predictions"][0]
    assert batch["predictions"][1]["no_known_terms"] is True
    assert all("known_terms" not in row for row in batch["predictions"])
    assert "known_terms" not in gw.predict(POSITIVE).json()


def test_request_id_is_echoed_or_made(served):
    gw = served.gw
    assert (
        gw.http.get("/health", headers={"X-Request-ID": "trace-123"}).headers["x-request-id"]
        == "trace-123"
    )
    made = gw.predict("").headers["x-request-id"]
    assert len(made) == 32
    assert any(line.get("request_id") == "trace-123" for line in gw.log_lines())


def test_logs_are_json_lines_without_review_text(served):
    gw = served.gw
    secret = "Quokkatastic zebrafilm marvellous"
    assert gw.predict(secret).status_code == 200
    assert gw.predict(secret + "x" * 5000).status_code == 400
    assert gw.http.post("/predict/batch", json={"texts": [secret, ""]}).status_code == 400
    assert gw.http.post("/predict", json={"text": 5, "note": secret}).status_code == 422
    lines = gw.log_lines()
    assert any(line.get("path") == "/predict" and line.get("status") == 200 for line in lines)
    assert "Quokkatastic" not in gw.log.read_text()


def test_metrics_are_prometheus_text(served):
    text = served.gw.http.get("/metrics").text
    assert 'gateway_requests_total{endpoint="/predict",method="POST",status="200"}' in text
    assert 'gateway_errors_total{endpoint="/predict",method="POST",status="400"}' in text
    assert "gateway_request_duration_seconds_bucket" in text
    assert f"gateway_model_version {float(served.v1)}" in text
    assert 'gateway_rollouts_total{kind="start",outcome="succeeded"}' in text


def test_docs_and_root(served):
    assert served.gw.http.get("/docs").status_code == 200
    assert "/predict/batch" in served.gw.http.get("/openapi.json").json()["paths"]
    assert served.gw.http.get("/").status_code == 200


def test_a_full_queue_is_503_at_once_and_a_queued_request_meets_its_deadline(tmp_path):
    """One call slot, room for two waiting texts, a 2 s deadline, and a stand-in scoring
    server that takes 5 s to answer: the third waiting request is refused at once; those in
    the queue give up at their deadline, their wait included."""
    stall = {"text": "Please stall."}
    with (
        misbehaving_scoring_server(delay=5) as upstream,
        gateway(
            tmp_path,
            f"http://127.0.0.1:{free_port()}",
            GATEWAY_SCORING_URL=upstream,
            GATEWAY_REQUEST_TIMEOUT="2",
            GATEWAY_BATCH_MAX_CALLS="1",
            GATEWAY_MAX_QUEUE="2",
        ) as gw,
        ThreadPoolExecutor(3) as pool,
    ):
        gw.wait_for(lambda: gw.http.get("/ready").status_code == 200, timeout=20)
        # Whichever comes first takes the slot and stalls; the other two wait.
        first, *queued = [pool.submit(gw.http.post, "/predict", json=stall) for _ in range(3)]
        gw.wait_for(lambda: metric(gw, "gateway_batch_waiting") == 2, timeout=10, every=0.01)
        refused = gw.http.post("/predict", json=stall)
        assert (refused.status_code, refused.json()) == (
            503,
            {"detail": "Too many requests are waiting for the model. Please try again shortly."},
        )
        assert refused.headers["retry-after"] == "1"
        for answer in [first.result(), *(future.result() for future in queued)]:
            assert (answer.status_code, answer.json()) == (
                504,
                {"detail": "Prediction timed out after 2s."},
            )
        assert metric(gw, "gateway_batch_waiting") == 0
