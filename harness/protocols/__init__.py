"""Protocol clients: encode a request and decode a response for one wire protocol."""

from harness.protocols.base import ProtocolClient
from harness.protocols.plain_json import PlainJsonClient

PROTOCOLS: dict[str, type[ProtocolClient]] = {PlainJsonClient.name: PlainJsonClient}

__all__ = ["PROTOCOLS", "PlainJsonClient", "ProtocolClient"]
