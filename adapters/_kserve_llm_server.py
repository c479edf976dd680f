"""KServe's OpenAI-compatible generative server, serving an LLM variant.

Run as `python -m adapters._kserve_llm_server --variant-dir DIR --http-port P [...]` with
the vLLM environment's Python: KServe 0.21 takes its OpenAI request and response types from
vLLM, so that environment also holds kserve (adapters/vllm.py). The model is an
`OpenAIGenerativeModel` whose completions and chat completions come from the transformers
engine the other Python stacks serve (harness/llm/serving.py); KServe's own endpoints
(`/openai/v1/completions`, `/openai/v1/chat/completions`) stream its SSE events. Binding
and logging are set as for the tensor server (adapters/_kserve_server.py).

- `GET /v2/models/<m>/ready`: ready once the engine is loaded (before the server starts)
- `GET /metrics`: the engine's Prometheus counters, on a port of their own (`--metrics-port`)
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import AsyncIterator
from importlib import metadata
from typing import Any


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="servingbench's KServe OpenAI LLM server")
    parser.add_argument("--variant-dir", required=True)
    parser.add_argument("--model-name", default="tiny-llama")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--grace-s", type=int, default=5)
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.argv = sys.argv[:1]  # kserve parses argv when imported
    os.environ["KSERVE_LOGLEVEL"] = args.log_level.upper()
    warnings.filterwarnings("ignore", "ORJSONResponse is deprecated")
    import kserve
    import prometheus_client
    from kserve import model_server
    from kserve.protocol.rest.openai import OpenAIGenerativeModel

    from adapters._kserve_server import _bind_to, _log_config
    from harness.llm.serving import BadRequest, Engine, openai_whole
    from harness.runtime import thread_count

    class GenerativeModel(OpenAIGenerativeModel):
        def __init__(self, name: str, engine: Engine) -> None:
            super().__init__(name)
            self.engine = engine

        async def _answer(self, request: Any, chat: bool) -> Any:
            from kserve.protocol.rest.openai.types import (
                ChatCompletion,
                Completion,
                ErrorResponse,
            )

            body = request.model_dump(exclude_none=True)
            try:
                prompt = self.engine.prompt(body, chat)
            except BadRequest as exc:
                error = {"message": str(exc), "type": "BadRequest", "code": 400}
                return ErrorResponse(error=error)
            if prompt.stream:
                return self._events(prompt)
            parts = [piece async for piece in self.engine.pieces(prompt)]
            whole = openai_whole(prompt, iter(parts))
            return (ChatCompletion if chat else Completion).model_validate(whole)

        async def _events(self, prompt: Any) -> AsyncIterator[str]:
            async for event in self.engine.events(prompt):
                yield event.decode()

        async def create_completion(self, request: Any, raw_request: Any = None,
                                    context: Any = None) -> Any:  # fmt: skip
            return await self._answer(request, chat=False)

        async def create_chat_completion(self, request: Any, raw_request: Any = None,
                                         context: Any = None) -> Any:  # fmt: skip
            return await self._answer(request, chat=True)

    _bind_to(args.host)
    model_server.args.log_config_file = _log_config(args.log_level.upper())
    engine = Engine.load(args.variant_dir, thread_count())
    prometheus_client.start_http_server(args.metrics_port, addr=args.host)
    server = kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1,
                                enable_docs_url=False, enable_latency_logging=False,
                                grace_period=args.grace_s)  # fmt: skip
    print(f"kserve {metadata.version('kserve')}: OpenAI model {args.model_name!r} loaded; "
          f"serving REST {args.host}:{args.http_port}", flush=True)  # fmt: skip
    server.start([GenerativeModel(args.model_name, engine)])


if __name__ == "__main__":
    main()
