"""Protocol clients: encode a request and decode a response for one wire protocol."""

from harness.protocols.base import ProtocolClient
from harness.protocols.kserve_v1 import KServeV1Client
from harness.protocols.openai_embeddings import OpenAIEmbeddingsClient
from harness.protocols.plain_json import PlainJsonClient
from harness.protocols.v2 import V2BinaryClient, V2GrpcClient, V2JsonClient

PROTOCOLS: dict[str, type[ProtocolClient]] = {
    cls.name: cls
    for cls in (PlainJsonClient, KServeV1Client, V2JsonClient, V2BinaryClient, V2GrpcClient)
}

__all__ = [
    "PROTOCOLS",
    "KServeV1Client",
    "OpenAIEmbeddingsClient",
    "PlainJsonClient",
    "ProtocolClient",
    "V2BinaryClient",
    "V2GrpcClient",
    "V2JsonClient",
]
