"""The FastAPI server of an LLM variant: OpenAI completions and chat completions, streamed.

`python -m adapters._fastapi_llm --host H --port P` (adapters/fastapi.py starts it for the
generate workload). The model is harness/llm/serving.py's transformers engine, loaded
before the port opens; its decode thread hands each token's text to the event loop as it
is chosen, and the response sends it as an SSE event at once.

- `GET /health`: 200 once the model is loaded
- `POST /v1/completions`, `POST /v1/chat/completions`: OpenAI bodies, `stream` or not,
  `ignore_eos`, `stream_options.include_usage`
- `GET /metrics`: the engine's Prometheus counters
"""

import argparse
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


def create_app() -> Any:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    from harness.llm.serving import BadRequest, Engine, openai_whole
    from harness.runtime import thread_count

    state: dict[str, Engine] = {}

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        state["engine"] = Engine.load(os.environ["SB_VARIANT_DIR"], thread_count())
        yield

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    async def answer(request: Request, chat: bool) -> Response:
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise BadRequest("expected a JSON object")
            prompt = state["engine"].prompt(body, chat)
        except ValueError as exc:  # BadRequest included
            return JSONResponse({"error": {"message": str(exc)}}, status_code=400)
        if prompt.stream:
            return StreamingResponse(state["engine"].events(prompt), media_type="text/event-stream")
        try:
            parts = [piece async for piece in state["engine"].pieces(prompt)]
        except RuntimeError as exc:
            return JSONResponse({"error": {"message": str(exc)}}, status_code=500)
        return JSONResponse(openai_whole(prompt, iter(parts)))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/metrics")
    async def metrics() -> Response:
        import prometheus_client

        return Response(prometheus_client.generate_latest(), media_type="text/plain")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await answer(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await answer(request, chat=True)

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="servingbench FastAPI LLM server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run("adapters._fastapi_llm:create_app", factory=True, host=args.host,
                port=args.port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
