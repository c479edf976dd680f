"""Request encoding per protocol: one body (`encode`) and the load engine's pre-built
requests for a dataset (`endpoint`). Both run before the load; `encode` also runs per
fidelity request."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from harness.protocols import PROTOCOLS, ProtocolClient


def client(name: str) -> ProtocolClient:
    cls: Any = PROTOCOLS[name]
    if name == "plain-json":
        return cls("http://127.0.0.1:8000")
    # the v2 clients name the model in the path; gRPC reads it from there too
    base = "grpc://127.0.0.1:8001" if name.endswith("grpc") else "http://127.0.0.1:8000"
    return cls(base, "/v2/models/model/infer")


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_encode_one_instance(benchmark: Any, protocol: str, instances: np.ndarray) -> None:
    c = client(protocol)
    body = benchmark(c.encode, instances[:1])
    assert isinstance(body, bytes) and body
    benchmark.extra_info["body_bytes"] = len(body)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_endpoint_256_instances(benchmark: Any, protocol: str, instances: np.ndarray) -> None:
    c = client(protocol)
    endpoint = benchmark(c.endpoint, instances)
    assert len(endpoint.requests) == len(instances)
