"""servingbench's engine. The names an adapter author needs are re-exported here
(docs/adding-an-adapter.md); the conformance suite is `harness.testing.AdapterConformance`,
kept out of this module so that importing the harness never imports pytest."""

from harness.adapter import (
    Adapter,
    AdapterConfig,
    Availability,
    ContainerSpec,
    ProcessSpec,
    Server,
)
from harness.config import StrictModel
from harness.environments import PYTHON, Environment
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
    "PYTHON",
    "Adapter",
    "AdapterConfig",
    "Availability",
    "BuiltVariant",
    "ConfigError",
    "ContainerSpec",
    "Environment",
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
