"""The two protobuf messages of Open Inference Protocol v2 over gRPC, encoded by hand.

Why not `tritonclient.grpc`'s generated classes: tritonclient 2.51 needs numpy<2 (pandas 3
in the harness needs numpy>=2) and protobuf<5; 2.73 would downgrade protobuf, ml-dtypes and
greenlet under onnx and locust. And the load engine only needs request bytes built once
before the load, plus one response read per fidelity sample. The wire format of
`ModelInferRequest` / `ModelInferResponse` (grpc_service.proto, package `inference`) is
small and stable:

    ModelInferRequest:  1 model_name, 2 model_version, 5 inputs (name 1, datatype 2,
                        shape 3 packed int64), 6 outputs (name 1), 7 raw_input_contents
    ModelInferResponse: 5 outputs (name 1, datatype 2, shape 3, contents 5), 6 raw_output_contents

Tests check these bytes against the generated classes (in the Triton environment) and
against a real server.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

METHOD = "/inference.GRPCInferenceService/ModelInfer"
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_FP32_CONTENTS = 6  # InferTensorContents.fp32_contents


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (strings, bytes, sub-messages, packed repeats)."""
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def encode_infer_request(
    model: str,
    inputs: list[tuple[str, str, tuple[int, ...], bytes]],
    outputs: tuple[str, ...] = (),
    version: str = "",
) -> bytes:
    """ModelInferRequest with each input's data in raw_input_contents (name, datatype, shape,
    little-endian bytes), fields in number order as protobuf itself writes them."""
    msg = _field(1, model.encode())
    if version:
        msg += _field(2, version.encode())
    for name, datatype, shape, _ in inputs:
        packed = b"".join(_varint(d) for d in shape)
        tensor = _field(1, name.encode()) + _field(2, datatype.encode()) + _field(3, packed)
        msg += _field(5, tensor)
    for name in outputs:
        msg += _field(6, _field(1, name.encode()))
    for *_, raw in inputs:
        msg += _field(7, raw)
    return msg


@dataclass
class OutputTensor:
    name: str = ""
    datatype: str = ""
    shape: list[int] = field(default_factory=list)
    fp32: bytes = b""  # contents.fp32_contents, packed (servers normally answer raw instead)


def decode_infer_response(body: bytes) -> list[tuple[OutputTensor, bytes]]:
    """Each output of a ModelInferResponse with its data (raw contents, else fp32_contents
    packed as little-endian float32)."""
    tensors: list[OutputTensor] = []
    raws: list[bytes] = []
    for number, value in _fields(body):
        if number == 5 and isinstance(value, bytes):
            tensors.append(_output_tensor(value))
        elif number == 6 and isinstance(value, bytes):
            raws.append(value)
    if raws and len(raws) != len(tensors):
        raise ValueError(f"{len(raws)} raw output contents for {len(tensors)} outputs")
    return [(t, raws[i] if raws else t.fp32) for i, t in enumerate(tensors)]


def _output_tensor(body: bytes) -> OutputTensor:
    tensor = OutputTensor()
    for number, value in _fields(body):
        if number == 1 and isinstance(value, bytes):
            tensor.name = value.decode()
        elif number == 2 and isinstance(value, bytes):
            tensor.datatype = value.decode()
        elif number == 3:  # packed (bytes) or one element at a time (int)
            tensor.shape += [value] if isinstance(value, int) else _packed_varints(value)
        elif number == 5 and isinstance(value, bytes):
            tensor.fp32 = b"".join(
                v if isinstance(v, bytes) else struct.pack("<I", v)
                for n, v in _fields(value)
                if n == _FP32_CONTENTS
            )
    return tensor


def _packed_varints(data: bytes) -> list[int]:
    values, pos = [], 0
    while pos < len(data):
        value, pos = _read_varint(data, pos)
        values.append(value)
    return values


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs: ints for varint and fixed32 fields, bytes otherwise
    (fixed32 comes back as int so packed and unpacked float repeats read the same)."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _read_varint(data, pos)
            yield number, value
        elif wire == _LEN:
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated length-delimited field")
            yield number, data[pos : pos + size]
            pos += size
        elif wire == _I64:
            yield number, data[pos : pos + 8]
            pos += 8
        elif wire == _I32:
            yield number, struct.unpack_from("<I", data, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
