"""Tensor inference: an input tensor in, an output tensor out (the digits CNN).

- variants: eager, torchscript, onnx, onnx-int8 (harness/variants.py), each gated on
  accuracy against the fp32 reference
- requests: the held-out split's inputs (`dataset.samples` of them), one instance each
- fidelity: every answer to `fidelity.samples` inputs, sent one at a time as the load
  will, equals the variant's own output within `fidelity.atol`/`rtol`, with the same top-1
- step figures: the core ones (latency, request rate); no columns of its own
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from harness.variants import VARIANT_NAMES
from harness.workloads.base import Workload

if TYPE_CHECKING:
    import numpy as np

    from harness.adapter import Adapter, Server
    from harness.fidelity import FidelityResult
    from harness.load.endpoints import Endpoint
    from harness.variants import BuiltVariant


class TensorWorkload(Workload):
    name: ClassVar[str] = "tensor"
    description: ClassVar[str] = "tensor in, tensor out (classification scores)"
    variant_names: ClassVar[tuple[str, ...]] = VARIANT_NAMES

    @classmethod
    def variant_availability(cls, name: str) -> tuple[bool, str]:
        from harness.variants import variant_availability

        return variant_availability(name)

    def build_variant(self, name: str) -> BuiltVariant:
        from harness.variants import build_variant

        return build_variant(name, self.bundle, self.scenario.variants)

    def inputs(self) -> np.ndarray:
        """The request payloads: the first `dataset.samples` held-out inputs."""
        count = min(self.scenario.dataset.samples, len(self.bundle.x_test))
        return self.bundle.x_test[:count]

    def _client(self, adapter: Adapter[Any], server: Server) -> Any:
        from harness.protocols.base import TensorClient

        return self.client_of(adapter, server, TensorClient)

    def endpoint(self, adapter: Adapter[Any], server: Server) -> Endpoint:
        """The requests, and the answers' shape for the load engine to check as it runs."""
        assert server.variant is not None
        inputs = self.inputs()
        expected = server.variant.outputs_test()[: len(inputs)]
        return self._client(adapter, server).endpoint(inputs, expected)

    def check_fidelity(self, adapter: Adapter[Any], server: Server) -> FidelityResult:
        from harness.fidelity import check_fidelity

        assert server.variant is not None
        spec = self.scenario.fidelity
        count = min(spec.samples, len(self.bundle.x_test))
        client = self._client(adapter, server)
        return check_fidelity(
            client.infer,
            self.bundle.x_test[:count],
            server.variant.outputs_test()[:count],
            spec.atol,
            spec.rtol,
            spec.min_agreement,
        )
