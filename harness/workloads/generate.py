"""Text generation, streamed token by token (tiny-llama, or a model of your own).

- variants: f32, f16, bf16, q8_0 (harness/llm/variants.py), each gated on greedy next-token
  agreement with the f32 reference
- requests: `workload:` (harness/llm/workload.py) makes `samples` generations whose prompt
  and output lengths follow the scenario; output length is forced (`ignore_eos`)
- fidelity: greedy next tokens agree with the variant's own weights, and token accounting
  is exact (harness/llm/fidelity.py)
- step figures: time to first token, inter-token latency, time per output token, tokens/s,
  goodput against the TTFT/TPOT SLO (harness/llm/metrics.py), the server's own token
  counters, and energy per output token where a GPU is sampled
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from harness.columns import Column
from harness.llm.traces import TraceSpec
from harness.llm.workload import WorkloadSpec
from harness.load.endpoints import StreamEndpoint
from harness.variants import LLM_VARIANT_NAMES
from harness.workloads.base import Lead, RecordMetric, Workload

if TYPE_CHECKING:
    import pandas as pd

    from harness.adapter import Adapter, Server
    from harness.fidelity import FidelityResult
    from harness.load.endpoints import Endpoint
    from harness.load.records import StepRecords
    from harness.protocols.base import GenerationClient, GenRequest
    from harness.results import RunFolder
    from harness.variants import BuiltVariant


def _col(name: str, unit: str = "", progress: str = "", family: str = "generate") -> Column:
    return Column(name, unit, family=family, mean=True, mlflow=True, progress=progress)


COLUMNS = (
    # what LLM servers report of the same step from their own counters (adapter `breakdown`)
    _col("server_output_tokens"),
    _col("server_prompt_tokens"),
    _col("server_prefill_ms", "ms"),
    _col("server_decode_ms", "ms"),
    # prompt tokens the server's own cache served (its counters), and the share of them
    _col("server_cached_prompt_tokens"),
    _col("server_cache_hit_fraction"),
    # measured by the client on the streams (harness/llm/metrics.py)
    _col("ttft_p50_ms", "ms", "TTFT p50 {:.1f} ms"),
    _col("ttft_p90_ms", "ms"),
    _col("ttft_p99_ms", "ms"),
    _col("ttft_mean_ms", "ms"),
    _col("itl_p50_ms", "ms", "ITL p50 {:.2f} ms"),
    _col("itl_p99_ms", "ms"),
    _col("tpot_mean_ms", "ms"),
    _col("tpot_p50_ms", "ms"),
    _col("tpot_p99_ms", "ms"),
    _col("output_tokens_per_s", "tok/s", "{:.0f} tok/s"),
    _col("prompt_tokens_per_s", "tok/s"),
    _col("output_tokens_mean"),
    _col("prompt_tokens_mean"),
    _col("llm_goodput_rps", "req/s"),
    _col("llm_goodput_fraction"),
    _col("slo_ttft_ms", "ms"),
    # conversations: the first turn's TTFT against the later turns' (a longer history to
    # prefill, or a prefix cache serving it), and how many turns the step sent
    _col("ttft_p50_first_turn_ms", "ms"),
    _col("ttft_p50_later_turns_ms", "ms"),
    _col("turns_sent"),
    _col("slo_tpot_ms", "ms"),
    # from the GPU sampler's energy and the tokens generated
    Column("energy_per_output_token_mj", "mJ", family="telemetry", mlflow=True),
)


# Above this share of cached prompt tokens a step is called "served from cache".
MAX_CACHE_HITS = 0.10


def _ttft(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    got = frame[frame.first_token_ns >= 0]
    ttft = (got.first_token_ns - got.intended_ns).to_numpy() / 1e6
    return got.intended_ns.to_numpy(), ttft


def _output_tokens(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    got = frame[frame.first_token_ns >= 0]
    return got.intended_ns.to_numpy(), got.output_tokens.to_numpy().astype(np.float64)


def _by_turn(records: StepRecords) -> dict[str, float]:
    assert records.stream is not None and records.turn is not None
    first = records.stream.first_ns
    ok = records.measured() & (records.error == 0) & (first >= 0)
    ttft = (first - records.intended_ns) / 1e6
    found: dict[str, float] = {"turns_sent": float((records.measured()).sum())}
    for name, mask in (("first_turn", records.turn == 0), ("later_turns", records.turn > 0)):
        if (ok & mask).any():
            found[f"ttft_p50_{name}_ms"] = float(np.median(ttft[ok & mask]))
    return found


class GenerateWorkload(Workload):
    name: ClassVar[str] = "generate"
    description: ClassVar[str] = "streamed text generation (OpenAI-compatible servers)"
    variant_names: ClassVar[tuple[str, ...]] = LLM_VARIANT_NAMES
    columns: ClassVar[tuple[Column, ...]] = COLUMNS
    spec_class = WorkloadSpec
    request_ids: ClassVar[bool] = True
    # streamed generations add the two numbers LLM users compare stacks by
    record_metrics: ClassVar[tuple[RecordMetric, ...]] = (
        RecordMetric("ttft_p50_ms", "ttft_p50", False, ("first_token_ns",), _ttft, "p50"),
        RecordMetric(
            "output_tokens_per_s", "tok_rate", True, ("first_token_ns", "output_tokens"),
            _output_tokens, "sum_rate",
        ),
    )  # fmt: skip

    def __init__(self, scenario: Any) -> None:
        super().__init__(scenario)
        self.spec: WorkloadSpec = scenario.workload or WorkloadSpec()
        self.generations: list[GenRequest] = []
        self.arrival_s: tuple[float, ...] = ()  # a replayed trace's arrival times
        self.conversations: list[Any] = []  # multi-turn: harness/load/sessions.py
        self.system_prompt = ""

    @classmethod
    def leads(cls, slo_percentile: float | None) -> tuple[Lead, Lead]:
        return (
            Lead("output_tokens_per_s", "output tokens/s", "most output tokens/s", "tok/s", 0,
                 True),
            Lead("ttft_p50_ms", "TTFT p50", "lowest TTFT p50", "ms", 1, False),
        )  # fmt: skip

    @classmethod
    def check_scenario(cls, scenario: Any) -> list[str]:
        if scenario.load.backend == "locust":
            return ["load.backend: locust cannot stream generations; use engine"]
        spec = scenario.workload
        if spec is not None and spec.conversation is not None:
            if spec.api != "chat":
                return ["workload.conversation: conversations need the chat API (api: chat)"]
            if spec.trace is not None:
                return ["workload.conversation: a trace gives its own requests; drop one"]
        return []

    @classmethod
    def variant_availability(cls, name: str) -> tuple[bool, str]:
        import importlib.util

        needed = ("tokenizers", "safetensors", "gguf")
        missing = [m for m in needed if importlib.util.find_spec(m) is None]
        return (not missing, f"missing Python package(s): {', '.join(missing)}" if missing else "")

    def build_variant(self, name: str) -> BuiltVariant:
        from harness.llm.variants import build_llm_variant

        return build_llm_variant(name, self.bundle, self.scenario.variants)

    def prepare(self, folder: RunFolder) -> None:
        from harness.errors import ConfigError
        from harness.llm.traces import TraceError
        from harness.llm.workload import make_requests

        bundle, spec = self.bundle, self.spec
        context = bundle.config.context_length if bundle.config else 2048
        traced: dict[str, Any] = {}
        try:
            if spec.conversation is not None:
                from harness.llm.workload import conversations

                self.conversations, self.system_prompt = conversations(
                    spec, bundle.tokenizer(), self.scenario.seed, context
                )
            if spec.trace is not None:
                traced = self._read_trace(spec.trace, bundle.tokenizer(), context)
            else:
                self.generations = make_requests(
                    spec, bundle.tokenizer(), self.scenario.seed, context
                )
        except TraceError as exc:
            raise ConfigError("scenario", [("workload.trace", str(exc))]) from exc
        except ValueError as exc:
            raise ConfigError("scenario", [("workload", str(exc))]) from exc
        lengths = [r.prompt_len for r in self.generations if r.prompt_len is not None]
        folder.write_workload(
            {
                **spec.model_dump(mode="json"),
                **traced,
                "requests": len(self.generations),
                "prompt_tokens_mean": sum(lengths) / len(lengths) if lengths else None,
                "output_tokens_mean": sum(r.max_tokens for r in self.generations)
                / len(self.generations),
            }
        )

    def _read_trace(self, trace: TraceSpec, tokenizer: Any, context: int) -> dict[str, Any]:
        """The trace's requests and arrival times; what workload.json says about it."""
        import hashlib
        from pathlib import Path

        from harness.llm.workload import trace_requests

        rows = trace.read()
        self.generations, clipped = trace_requests(
            rows, trace, tokenizer, self.scenario.seed, context
        )
        self.arrival_s = tuple(r.t_s for r in rows)
        block = max(1, round(trace.block_tokens * trace.scale))
        seen: set[int] = set()
        reusable = total = 0
        for row, req in zip(rows, self.generations, strict=True):
            length = req.prompt_len or round(row.input_tokens * trace.scale)
            lead = 0
            while lead < len(row.blocks) and row.blocks[lead] in seen:
                lead += 1
            reusable += min(lead * block, length)
            total += length
            seen.update(row.blocks)
        return {
            "trace_file": trace.path,
            "trace_sha256": hashlib.sha256(Path(trace.path).read_bytes()).hexdigest(),
            "trace_rows": len(rows),
            "trace_span_s": rows[-1].t_s,
            "trace_clipped_rows": clipped,
            # the share of prompt tokens a perfect prefix cache could serve (leading blocks
            # seen before): what `prompt_cache: true` can gain on this trace
            "trace_reusable_prefix_fraction": reusable / total if total else 0.0,
        }

    def server_settings(self) -> dict[str, Any]:
        return {"prompt_cache": self.spec.prompt_cache}

    def judge(self, row: dict[str, Any]) -> str | None:
        """A step whose prompts came mostly from the server's cache measured cache hits, not
        prefill: unless the workload asked for caching, it is not ranked."""
        hit = row.get("server_cache_hit_fraction")
        if self.spec.prompt_cache or not isinstance(hit, float) or hit <= MAX_CACHE_HITS:
            return None
        return (
            f"{hit:.0%} of prompt tokens were served from the server's prompt cache "
            "(workload.prompt_cache is off): this step measured cache hits, not prefill"
        )

    def _client(self, adapter: Adapter[Any], server: Server) -> GenerationClient:
        from harness.protocols.base import GenerationClient

        client: GenerationClient = self.client_of(adapter, server, GenerationClient)
        return client.for_api(self.spec.api)

    def endpoint(self, adapter: Adapter[Any], server: Server) -> Endpoint:
        endpoint = self._client(adapter, server).endpoint(self.generations)
        if self.arrival_s and isinstance(endpoint, StreamEndpoint):  # a trace's own timing
            return dataclasses.replace(endpoint, arrival_s=self.arrival_s)
        if self.conversations and isinstance(endpoint, StreamEndpoint):
            from harness.errors import ConfigError

            client = self._client(adapter, server)
            builder = getattr(client, "chat_builder", None)
            if builder is None:
                why = f"the {client.name} client cannot hold conversations (OpenAI chat only)"
                raise ConfigError("scenario", [("workload.conversation", why)])
            talk = self.spec.conversation
            assert talk is not None
            return dataclasses.replace(
                endpoint, requests=(), expected_tokens=(), sessions=tuple(self.conversations),
                chat=builder(self.system_prompt), think_time_s=talk.think_time_s,
            )  # fmt: skip
        return endpoint

    def check_fidelity(self, adapter: Adapter[Any], server: Server) -> FidelityResult:
        from harness.llm.fidelity import check_generation
        from harness.llm.variants import checks

        assert server.variant is not None
        spec = self.scenario.fidelity
        return check_generation(
            self._client(adapter, server),
            checks(server.variant),
            self.generations,
            spec.samples,
            spec.llm_min_agreement,
        )

    def step_metrics(
        self, records: StepRecords, duration_s: float, telemetry: dict[str, float]
    ) -> dict[str, float]:
        from harness.llm.metrics import llm_summary

        slo = self.scenario.slo
        figures = llm_summary(records, duration_s, slo.ttft_ms, slo.tpot_ms)
        if figures and records.turn is not None and records.stream is not None:
            figures |= _by_turn(records)
        if figures and telemetry.get("gpu_energy_j"):
            generated = figures["output_tokens_per_s"] * duration_s
            if generated > 0:
                figures["energy_per_output_token_mj"] = 1000 * telemetry["gpu_energy_j"] / generated
        return figures
