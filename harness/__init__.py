"""servingbench's engine. The names an adapter author needs are re-exported here."""

from harness.adapter import Adapter, AdapterConfig, Availability, ProcessSpec, Server
from harness.config import StrictModel
from harness.errors import (
    ConfigError,
    LaunchError,
    ProtocolError,
    ServingBenchError,
    UnavailableError,
)
from harness.protocols import PlainJsonClient, ProtocolClient
from harness.variants import BuiltVariant

__all__ = [
    "Adapter",
    "AdapterConfig",
    "Availability",
    "BuiltVariant",
    "ConfigError",
    "LaunchError",
    "PlainJsonClient",
    "ProcessSpec",
    "ProtocolClient",
    "ProtocolError",
    "Server",
    "ServingBenchError",
    "StrictModel",
    "UnavailableError",
]
