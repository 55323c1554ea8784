"""The Open Inference Protocol (v2) against a real gateway, scoring server and registry, spoken
by a real client of the protocol (Triton's) and, for what that client cannot send, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from mlflow import MlflowClient
from tritonclient.utils import InferenceServerException

from gateway.api.schemas import MAX_BATCH
from tests.gateways import Gateway, gateway
from tests.models import NAME, register_version

KEY = "oip-key-5d21c7e0a4"
AUTH = {"X-API-Key": KEY}
# An alias of its own: the gateway follows it whatever other modules do with `production`.
ALIAS = "oip"
EMPTY = "Input text cannot be empty."
TEXTS = [
    "This movie was absolutely amazing! The acting was superb.",
    "Terrible movie. Waste of time. Disappointing and boring.",
    "A quiet, patient film that rewards attention.",
    "I walked out after an hour.",
]


@pytest.fixture(scope="module")
def v2_gateway(tmp_path_factory, tracking_uri) -> Gateway:
    """A gateway with API keys serving a version of its own through the `oip` alias."""
    version = register_version(tracking_uri)
    MlflowClient(tracking_uri).set_registered_model_alias(NAME, ALIAS, version)
    with gateway(
        tmp_path_factory.mktemp("oip-gateway"),
        tracking_uri,
        GATEWAY_MODEL_ALIAS=ALIAS,
        GATEWAY_API_KEYS=KEY,
    ) as gw:
        gw.http.headers.update(AUTH)
        gw.wait_for(lambda: gw.serving(f"v{version}"), timeout=120)
        gw.version = version
        yield gw


@pytest.fixture(scope="module")
def client(v2_gateway) -> triton.InferenceServerClient:
    with triton.InferenceServerClient(url=v2_gateway.url.removeprefix("http://")) as c:
        yield c


def text_input(texts: list[str]) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=False)
    return tensor


def infer(client, texts: list[str], headers=AUTH, **options) -> triton.InferResult:
    return client.infer(NAME, [text_input(texts)], headers=headers, **options)


def refused(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return raised.value


def test_health_is_open_and_metadata_comes_from_the_signature(v2_gateway, client):
    assert client.is_server_live()  # no key: open like /health
    assert client.is_server_ready()
    assert client.is_model_ready(NAME, headers=AUTH)
    assert client.is_model_ready(NAME, v2_gateway.version, headers=AUTH)
    assert client.get_server_metadata(headers=AUTH)["name"] == "sentiment-gateway"
    assert client.get_model_metadata(NAME, headers=AUTH) == {
        "name": NAME,
        "versions": [v2_gateway.version],
        "platform": "mlflow",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "sentiment", "datatype": "BYTES", "shape": [-1]},
            {"name": "confidence", "datatype": "FP64", "shape": [-1]},
        ],
    }


def test_infer_answers_exactly_what_predict_answers(v2_gateway, client):
    batch = v2_gateway.http.post("/predict/batch", json={"texts": TEXTS}).json()["predictions"]
    result = infer(client, TEXTS, request_id="oip-request-1")
    response = result.get_response()
    assert response["model_name"] == NAME
    assert response["model_version"] == v2_gateway.version  # "3"; /predict says "v3"
    assert response["id"] == "oip-request-1"
    assert result.as_numpy("sentiment").tolist() == [p["sentiment"] for p in batch]
    assert result.as_numpy("confidence").dtype == np.float64
    assert result.as_numpy("confidence").tolist() == [p["confidence"] for p in batch]
    # One text goes through /predict's micro-batching path.
    single = v2_gateway.predict(TEXTS[0]).json()
    one = infer(client, TEXTS[:1])
    assert one.as_numpy("sentiment").tolist() == [single["sentiment"]]
    assert one.as_numpy("confidence").tolist() == [single["confidence"]]
    # The named live version answers the same.
    named = client.infer(NAME, [text_input(TEXTS)], model_version=v2_gateway.version, headers=AUTH)
    assert named.as_numpy("confidence").tolist() == [p["confidence"] for p in batch]


def test_requested_outputs_are_the_ones_answered(client):
    wanted = [triton.InferRequestedOutput("confidence", binary_data=False)]
    result = infer(client, TEXTS[:2], outputs=wanted)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["confidence"]
    assert result.as_numpy("sentiment") is None


def test_unknown_model_or_version_is_404_and_an_empty_text_is_400(v2_gateway, client):
    error = refused(lambda: client.infer("NoSuchModel", [text_input(TEXTS[:1])], headers=AUTH))
    assert error.status() == "404"
    assert "NoSuchModel" in error.message()
    other = str(int(v2_gateway.version) + 1000)
    error = refused(
        lambda: client.infer(NAME, [text_input(TEXTS[:1])], model_version=other, headers=AUTH)
    )
    assert error.status() == "404"
    assert f"no servable version '{other}'" in error.message()
    assert not client.is_model_ready(NAME, other, headers=AUTH)
    assert v2_gateway.http.get(f"/v2/models/{NAME}/versions/{other}/ready").status_code == 404
    error = refused(lambda: infer(client, ["   "]))
    assert (error.status(), error.message()) == ("400", EMPTY)
    error = refused(lambda: infer(client, ["fine", ""]))
    assert (error.status(), error.message()) == ("400", f"text[1]: {EMPTY}")


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong-key-0000"}])
def test_api_keys_are_enforced(client, headers):
    error = refused(lambda: infer(client, TEXTS[:1], headers=headers))
    assert (error.status(), error.message()) == ("401", "Missing or invalid API key.")
    assert not client.is_model_ready(NAME, headers=headers)
    assert (
        infer(client, TEXTS[:1], headers={"Authorization": f"Bearer {KEY}"})
        .as_numpy("sentiment")
        .size
        == 1
    )


def tensor(**changes) -> dict:
    text = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Fine."]}
    return {"inputs": [text | changes]}


@pytest.mark.parametrize(
    "body,error",
    [
        (tensor(datatype="FP32"), "Input 'text' must have datatype BYTES, not FP32."),
        (tensor(name="review"), "Expected one input tensor named 'text'"),
        (tensor(shape=[2]), "Input 'text' has shape [2] but 1 elements in its data."),
        (tensor(data=[3]), "must be a string."),
        ({"inputs": []}, "Expected one input tensor named 'text'"),
        ({"inputs": "text"}, "inputs: Input should be a valid list"),
        (tensor(shape=[MAX_BATCH + 1], data=["a"] * (MAX_BATCH + 1)), "Batch exceeds"),
        (tensor() | {"outputs": [{"name": "known_terms"}]}, "Unknown output(s) ['known_terms']"),
    ],
)
def test_malformed_requests_are_400_in_the_protocols_error_shape(v2_gateway, body, error):
    response = v2_gateway.http.post(f"/v2/models/{NAME}/infer", json=body)
    assert response.status_code == 400
    assert list(response.json()) == ["error"]
    assert response.json()["error"].startswith(error) or error in response.json()["error"]


def test_nested_data_and_binary_extension(v2_gateway):
    nested = tensor(shape=[2, 1], data=[[TEXTS[0]], [TEXTS[1]]]) | {"id": "nested"}
    answer = v2_gateway.http.post(f"/v2/models/{NAME}/infer", json=nested)
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == "nested"
    assert answer.json()["outputs"][0] == {
        "name": "sentiment",
        "shape": [2, 1],  # the input's shape: one answer per text
        "datatype": "BYTES",
        "data": ["positive", "negative"],
    }
    # Nested deeper than the shape says, or deeper than any JSON parser recurses: refused.
    deep = "[" * 5000 + '"Fine."' + "]" * 5000
    head = '{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": '
    for data in (deep, '[[["Fine."]]]'):
        refused = v2_gateway.http.post(
            f"/v2/models/{NAME}/infer",
            content=f"{head}{data}}}]}}",
            headers={"Content-Type": "application/json"},
        )
        assert refused.status_code == 400, refused.text[:200]
        assert list(refused.json()) == ["error"]
    binary = v2_gateway.http.post(
        f"/v2/models/{NAME}/infer",
        content=b'{"inputs":[]}\x00\x00\x00\x00',
        headers={"Inference-Header-Content-Length": "13"},
    )
    assert binary.status_code == 400
    assert "binary tensor extension is not supported" in binary.json()["error"]


def test_request_ids_metrics_and_the_prediction_log_apply(v2_gateway):
    answer = v2_gateway.http.post(
        f"/v2/models/{NAME}/infer", json=tensor(), headers={"X-Request-ID": "oip-logged-1"}
    )
    assert answer.headers["X-Request-ID"] == "oip-logged-1"
    sentiment = answer.json()["outputs"][0]["data"][0]
    # Feedback finds the answer by its request id: it is in the prediction log.
    feedback = v2_gateway.wait_for(
        lambda: (
            (
                r := v2_gateway.http.post(
                    "/feedback", json={"request_id": "oip-logged-1", "label": "positive"}
                )
            ).status_code
            == 201
            and r
        ),
        timeout=30,
    )
    assert feedback.json()["sentiment"] == sentiment
    assert feedback.json()["model_version"] == f"v{v2_gateway.version}"
    metrics = v2_gateway.http.get("/metrics").text
    assert 'endpoint="/v2/models/{name}/infer",method="POST",status="200"' in metrics
