"""Open Inference Protocol (KServe v2, Triton's HTTP/gRPC API): three encodings.

    v2-json    POST /v2/models/<m>/infer   {"inputs": [{"name", "shape", "datatype", "data"}]}
    v2-binary  the same, with tensor bytes after the JSON header (Triton's binary tensor
               extension: `Inference-Header-Content-Length` says where the JSON ends;
               `binary_data_output` asks for the answer in the same form)
    v2-grpc    inference.GRPCInferenceService/ModelInfer, tensors in raw_*_contents, with
               the generated messages of `tritonclient.grpc` (encoded once before the load)

`path` names the model the v2 way (`/v2/models/<m>/infer`) for all three; the gRPC client
reads the model name from it and takes `grpc://host:port` (or `http://host:port`, the
gRPC port) as base URL. Every request carries one input: FP32, or BYTES for a batch of
strings (a sentence encoder's texts, shape [N, 1]: JSON strings in v2-json, each element as
a 4-byte length and its UTF-8 bytes in the binary forms); the named output is decoded.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import httpx
import numpy as np

from harness.errors import ProtocolError
from harness.load.endpoints import Endpoint, GrpcEndpoint
from harness.protocols.base import ProtocolClient, bytes_tensor, is_text, texts_of

GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"
# a ModelInferResponse's typed contents, by datatype (when the server sent no raw bytes)
_TYPED = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT64": "int64_contents",
          "INT32": "int_contents", "INT16": "int_contents", "INT8": "int_contents",
          "UINT8": "uint_contents", "BOOL": "bool_contents"}  # fmt: skip

DTYPES = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "INT64": "<i8", "INT32": "<i4",
          "INT16": "<i2", "INT8": "i1", "UINT8": "u1", "BOOL": "?"}  # fmt: skip
_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
HEADER_LENGTH = "Inference-Header-Content-Length"


class V2Client(ProtocolClient):
    """What the three encodings share: the model path, tensor names, output decoding."""

    def __init__(
        self,
        base_url: str,
        path: str = "/v2/models/model/infer",
        *,
        input_name: str = "input",
        output_name: str = "output",
    ) -> None:
        super().__init__(base_url, path)
        found = _MODEL_PATH.match(path)
        if found is None:
            raise ValueError(f"{path!r} is not a v2 inference path (/v2/models/<model>/infer)")
        self.model, self.version = found.group(1), found.group(2) or ""
        self.input_name, self.output_name = input_name, output_name

    def _tensor(self, outputs: list[dict[str, Any]], raw: list[bytes | None]) -> np.ndarray:
        for meta, data in zip(outputs, raw, strict=True):
            if meta.get("name") != self.output_name:
                continue
            dtype = DTYPES.get(meta.get("datatype", ""))
            if dtype is None:
                raise ProtocolError(f"v2 output {self.output_name}: datatype {meta!r} unknown")
            shape = [int(d) for d in meta.get("shape", [])]
            if data is None:
                values = np.asarray(meta.get("data", []), dtype)
            else:
                values = np.frombuffer(data, dtype)
            try:
                return values.reshape(shape).astype(np.float32)
            except ValueError as exc:
                raise ProtocolError(f"v2 output {self.output_name}: {exc}") from exc
        names = [o.get("name") for o in outputs]
        raise ProtocolError(f"v2 answer has no output {self.output_name!r} (outputs: {names})")


class V2JsonClient(V2Client):
    name: ClassVar[str] = "v2-json"

    def encode(self, batch: np.ndarray) -> bytes:
        if is_text(batch):
            tensor = {"name": self.input_name, "shape": [batch.size, 1], "datatype": "BYTES",
                      "data": texts_of(batch)}  # fmt: skip
        else:
            batch = np.asarray(batch, np.float32)
            tensor = {"name": self.input_name, "shape": list(batch.shape), "datatype": "FP32",
                      "data": batch.ravel().tolist()}  # fmt: skip
        return json.dumps({"inputs": [tensor]}, separators=(",", ":")).encode()

    def decode(self, body: bytes) -> np.ndarray:
        try:
            outputs = json.loads(body)["outputs"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"not a v2 JSON answer ({exc}): {body[:200]!r}") from exc
        return self._tensor(outputs, [None] * len(outputs))


class V2BinaryClient(V2Client):
    name: ClassVar[str] = "v2-binary"
    content_type: ClassVar[str] = "application/octet-stream"

    def encode(self, batch: np.ndarray) -> bytes:
        datatype, shape, raw = _raw(batch)
        tensor = {"name": self.input_name, "shape": shape, "datatype": datatype,
                  "parameters": {"binary_data_size": len(raw)}}  # fmt: skip
        header = {"inputs": [tensor], "parameters": {"binary_data_output": True}}
        return json.dumps(header, separators=(",", ":")).encode() + raw

    def answer_bounds(self, values: int) -> tuple[int, int]:
        return 4 * values, 4 * values + 2048  # the JSON header and the raw FP32 tensor

    def extra_headers(self, body: bytes) -> dict[str, str]:
        return {HEADER_LENGTH: str(_split(body)[1])}

    def decode(self, body: bytes) -> np.ndarray:
        # The response header says where the JSON ends, but so does the JSON itself: decoding
        # from the body alone keeps `decode(bytes)` the one interface for every protocol.
        header, offset = _split(body)
        raw: list[bytes | None] = []
        for meta in header.get("outputs", []):
            size = (meta.get("parameters") or {}).get("binary_data_size")
            if size is None:
                raw.append(None)
                continue
            raw.append(body[offset : offset + int(size)])
            offset += int(size)
        if offset != len(body):
            raise ProtocolError(f"v2 binary answer: {len(body) - offset} bytes left over")
        return self._tensor(header.get("outputs", []), raw)


def _raw(batch: np.ndarray) -> tuple[str, list[int], bytes]:
    """(datatype, shape, raw contents) of one input tensor in the binary forms."""
    if is_text(batch):
        return "BYTES", [batch.size, 1], bytes_tensor(batch)
    return "FP32", list(np.shape(batch)), np.ascontiguousarray(batch, "<f4").tobytes()


def _split(body: bytes) -> tuple[dict[str, Any], int]:
    """The JSON header at the start of a binary-extension body, and where it ends."""
    try:
        # latin-1 maps bytes 1:1 to characters, so the end index is a byte offset
        header, end = json.JSONDecoder().raw_decode(body.decode("latin-1"))
    except ValueError as exc:
        raise ProtocolError(f"v2 binary body without a JSON header: {body[:200]!r}") from exc
    if not isinstance(header, dict):
        raise ProtocolError(f"v2 binary header is not an object: {body[:200]!r}")
    return header, end


class V2GrpcClient(V2Client):
    name: ClassVar[str] = "v2-grpc"
    content_type: ClassVar[str] = "application/grpc"
    answer_starts: ClassVar[bytes] = b""  # protobuf: any first byte

    def __init__(
        self,
        base_url: str,
        path: str = "/v2/models/model/infer",
        *,
        input_name: str = "input",
        output_name: str = "output",
    ) -> None:
        super().__init__(base_url, path, input_name=input_name, output_name=output_name)
        url = httpx.URL(self.base_url)
        if url.port is None:
            raise ValueError(f"{base_url!r}: a gRPC target needs an explicit port")
        self.host, self.port = url.host, url.port

    def encode(self, batch: np.ndarray) -> bytes:
        from tritonclient.grpc import service_pb2 as pb  # the generated Open Inference messages

        datatype, shape, raw = _raw(batch)
        request = pb.ModelInferRequest(model_name=self.model, model_version=self.version)
        tensor = request.inputs.add(name=self.input_name, datatype=datatype)
        tensor.shape.extend(shape)
        request.outputs.add(name=self.output_name)
        request.raw_input_contents.append(raw)
        return bytes(request.SerializeToString())

    def decode(self, body: bytes) -> np.ndarray:
        from google.protobuf.message import DecodeError
        from tritonclient.grpc import service_pb2 as pb

        try:
            answer = pb.ModelInferResponse.FromString(body)
        except DecodeError as exc:
            raise ProtocolError(f"not a ModelInferResponse ({exc}): {body[:200]!r}") from exc
        metas: list[dict[str, Any]] = []
        for out in answer.outputs:
            meta = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
            if not answer.raw_output_contents and out.datatype in _TYPED:
                meta["data"] = list(getattr(out.contents, _TYPED[out.datatype]))
            metas.append(meta)
        raw = list(answer.raw_output_contents) or [None] * len(metas)
        if len(raw) != len(metas):
            raise ProtocolError(f"ModelInferResponse: {len(metas)} outputs, {len(raw)} raw")
        return self._tensor(metas, raw)

    def infer(self, batch: np.ndarray, timeout_s: float = 30.0) -> np.ndarray:
        import grpc  # only gRPC targets need grpcio (the `triton` extra)

        from harness.load.grpc import CHANNEL_OPTIONS

        target = f"{self.host}:{self.port}"
        with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            call = channel.unary_unary(GRPC_METHOD)  # bytes in, bytes out
            try:
                body = call(self.encode(batch), timeout=timeout_s)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
                raise ProtocolError(f"grpc://{target} ModelInfer: {code.name}: {details}") from exc
        return self.decode(body)

    def answer_bounds(self, values: int) -> tuple[int, int]:
        return 4 * values, 4 * values + 2048  # raw FP32 contents and the message around them

    def endpoint(self, instances: np.ndarray, expected: np.ndarray | None = None) -> Endpoint:
        requests = tuple(self.encode(instances[i : i + 1]) for i in range(len(instances)))
        check = self.answer_check(expected)
        return GrpcEndpoint(self.host, self.port, GRPC_METHOD, requests, check)
