"""Open Inference Protocol v2 clients: bodies as the spec writes them, answers decoded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.errors import ProtocolError
from harness.load.endpoints import GrpcEndpoint, HttpEndpoint
from harness.protocols import PROTOCOLS, V2BinaryClient, V2GrpcClient, V2JsonClient
from harness.protocols.v2 import GRPC_METHOD

X = (np.arange(128, dtype=np.float32).reshape(2, 1, 8, 8) / 7).astype(np.float32)
Y = np.linspace(-1, 1, 20, dtype=np.float32).reshape(2, 10)


def test_registered_by_name() -> None:
    assert PROTOCOLS["v2-json"] is V2JsonClient
    assert PROTOCOLS["v2-binary"] is V2BinaryClient
    assert PROTOCOLS["v2-grpc"] is V2GrpcClient


def test_json_request_and_answer() -> None:
    client = V2JsonClient("http://127.0.0.1:8000", "/v2/models/digits/infer")
    body = json.loads(client.encode(X))
    [tensor] = body["inputs"]
    assert tensor["name"] == "input" and tensor["datatype"] == "FP32"
    assert tensor["shape"] == [2, 1, 8, 8]
    np.testing.assert_array_equal(np.asarray(tensor["data"], np.float32), X.ravel())
    answer = {"model_name": "digits", "outputs": [
        {"name": "other", "datatype": "INT64", "shape": [2], "data": [1, 2]},
        {"name": "output", "datatype": "FP32", "shape": [2, 10], "data": Y.ravel().tolist()},
    ]}  # fmt: skip
    np.testing.assert_array_equal(client.decode(json.dumps(answer).encode()), Y)
    with pytest.raises(ProtocolError, match="no output 'output'"):
        client.decode(b'{"outputs": []}')


def test_binary_request_splits_header_and_tensor() -> None:
    client = V2BinaryClient("http://127.0.0.1:8000", "/v2/models/digits/infer")
    body = client.encode(X)
    length = int(client.extra_headers(body)["Inference-Header-Content-Length"])
    header = json.loads(body[:length])
    assert header["inputs"][0]["parameters"]["binary_data_size"] == X.nbytes
    assert header["parameters"]["binary_data_output"] is True
    assert body[length:] == X.astype("<f4").tobytes()
    endpoint = client.endpoint(X)  # one pre-built request per instance
    assert isinstance(endpoint, HttpEndpoint) and len(endpoint.requests) == 2
    single = client.encode(X[:1])
    split = client.extra_headers(single)["Inference-Header-Content-Length"]
    head, _, payload = endpoint.requests[0].partition(b"\r\n\r\n")
    assert b"Content-Type: application/octet-stream\r\n" in head
    assert f"Inference-Header-Content-Length: {split}\r\n".encode() in head + b"\r\n"
    assert payload == single


def test_binary_answer_with_binary_and_json_outputs() -> None:
    client = V2BinaryClient("http://127.0.0.1:8000", "/v2/models/digits/infer")
    header = {"outputs": [
        {"name": "probs", "datatype": "FP32", "shape": [2, 10],
         "parameters": {"binary_data_size": 80}},
        {"name": "output", "datatype": "FP32", "shape": [2, 10],
         "parameters": {"binary_data_size": 80}},
    ]}  # fmt: skip
    body = json.dumps(header).encode() + np.zeros(20, "<f4").tobytes() + Y.astype("<f4").tobytes()
    np.testing.assert_array_equal(client.decode(body), Y)
    with pytest.raises(ProtocolError, match="left over"):
        client.decode(body + b"x")


def test_grpc_request_and_answer() -> None:
    client = V2GrpcClient("grpc://127.0.0.1:8001", "/v2/models/digits/versions/3/infer")
    assert (client.model, client.version) == ("digits", "3")
    body = client.encode(X)
    assert b"digits" in body and X.astype("<f4").tobytes() in body
    endpoint = client.endpoint(X)
    assert isinstance(endpoint, GrpcEndpoint)
    assert (endpoint.host, endpoint.port, endpoint.method) == ("127.0.0.1", 8001, GRPC_METHOD)
    assert endpoint.requests[1] == client.encode(X[1:2])
    # a ModelInferResponse as protobuf writes it: outputs (5) then raw contents (6)
    tensor = b"\x0a\x06output" + b"\x12\x04FP32" + b"\x1a\x02\x02\x0a"
    answer = b"\x0a\x06digits" + b"\x2a" + bytes([len(tensor)]) + tensor
    answer += b"\x32\x50" + Y.astype("<f4").tobytes()
    np.testing.assert_array_equal(client.decode(answer), Y)
    with pytest.raises(ProtocolError, match="not a ModelInferResponse"):
        client.decode(b"\x2a\x50")


def test_paths_that_name_no_model_are_rejected() -> None:
    with pytest.raises(ValueError, match="not a v2 inference path"):
        V2JsonClient("http://127.0.0.1:8000", "/predict")


def test_grpc_messages_are_the_generated_open_inference_ones() -> None:
    """What we send parses as tritonclient's ModelInferRequest; both answer forms decode."""
    from tritonclient.grpc import service_pb2 as pb

    client = V2GrpcClient("grpc://127.0.0.1:8001", "/v2/models/model/infer")
    request = pb.ModelInferRequest.FromString(client.encode(X[:1]))
    assert request.model_name == "model"
    [tensor] = request.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("input", "FP32", [1, 1, 8, 8])
    assert [o.name for o in request.outputs] == ["output"]
    np.testing.assert_array_equal(
        np.frombuffer(request.raw_input_contents[0], "<f4").reshape(1, 1, 8, 8), X[:1]
    )
    raw = pb.ModelInferResponse(model_name="model")
    raw.outputs.add(name="output", datatype="FP32").shape.extend([2, 10])
    raw.raw_output_contents.append(Y.astype("<f4").tobytes())
    typed = pb.ModelInferResponse(model_name="model")
    out = typed.outputs.add(name="output", datatype="FP32")
    out.shape.extend([2, 10])
    out.contents.fp32_contents.extend(Y.ravel().tolist())
    for answer in (raw, typed):
        np.testing.assert_array_equal(client.decode(answer.SerializeToString()), Y)
