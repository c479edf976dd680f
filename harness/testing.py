"""pytest support for adapter authors: the conformance suites to subclass, and fixtures.

    from harness.testing import AdapterConformance

    class TestMineConformance(AdapterConformance):
        adapter_class = MineAdapter
        config = {"kind": "mine"}        # the adapter's config (kind filled in if left out)
        variants = ["eager", "onnx"]     # default: every variant it serves that builds here

`GenerationConformance` is the same for a generative (streaming) server, on tiny-llama's
variants (f32, ...): greedy tokens and token accounting, and streams under load.

Every test drives the real adapter through the real process launcher on loopback (the
checks themselves live in `harness.conformance`). The suite skips, saying why, when
`adapter_class.availability()` is False, and skips the server checks for adapters with no
server (`has_server = False`, like `inprocess`).

This module is also a pytest plugin (entry point `pytest11: servingbench`) adding the
`conformance` marker and two fixtures for an adapter's own tests: `servingbench_bundle`
(the digits-cnn model) and `servingbench_variant` (a factory: name -> built variant).
Builds go to a throw-away cache per test session unless `SERVINGBENCH_CACHE` is set (set
it to reuse builds across sessions: entries are content-addressed, reuse is safe). A
project that already has a `bundle` fixture returning a ModelBundle (servingbench's own
tests) has it reused.

Imports of torch and the model zoo happen inside fixtures: a plugin is imported by every
pytest session in the environment and must stay cheap.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from harness import conformance
from harness.adapter import Adapter
from harness.errors import LaunchError

if TYPE_CHECKING:
    import numpy as np

    from harness.models import ModelBundle
    from harness.variants import BuiltVariant

__all__ = [
    "AdapterConformance",
    "GenerationConformance",
    "servingbench_bundle",
    "servingbench_variant",
]

_CACHES: dict[int, Path] = {}  # id(pytest config) -> the session's build cache
_BUNDLES: dict[Path, Any] = {}  # cache root -> ModelBundle, so each subclass shares one build


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "conformance: servingbench's adapter conformance suite (harness.testing)"
    )


def session_cache(request: pytest.FixtureRequest) -> Path:
    """`$SERVINGBENCH_CACHE` when set, else a temp folder for this session (set in env, so
    every build of the session, in this process, lands there)."""
    config = request.config
    if id(config) in _CACHES:
        return _CACHES[id(config)]
    preset = os.environ.get("SERVINGBENCH_CACHE")
    if preset:
        root = Path(preset)
    else:
        factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        root = factory.mktemp("servingbench-cache")
        os.environ["SERVINGBENCH_CACHE"] = str(root)
        config.add_cleanup(_forget_env)
    config.add_cleanup(lambda: _forget_cache(id(config)))
    _CACHES[id(config)] = root
    return root


def _forget_env() -> None:
    os.environ.pop("SERVINGBENCH_CACHE", None)


def _forget_cache(key: int) -> None:
    root = _CACHES.pop(key, Path())
    _BUNDLES.pop(root, None)
    _BUNDLES.pop(root / "tiny-llama", None)


def session_bundle(request: pytest.FixtureRequest) -> ModelBundle:
    """The digits-cnn bundle: the project's `bundle` fixture if it has one, else built here."""
    from harness.models import ModelBundle, build_model
    from harness.models.digits_cnn import DigitsCnnConfig

    # absent, or narrower-scoped than this session-wide use (pytest fails that request)
    with contextlib.suppress(pytest.FixtureLookupError, pytest.fail.Exception):
        found = request.getfixturevalue("bundle")
        if isinstance(found, ModelBundle):
            return found
    root = session_cache(request)
    if root not in _BUNDLES:
        _BUNDLES[root] = build_model(DigitsCnnConfig(name="digits-cnn"))
    bundle: ModelBundle = _BUNDLES[root]
    return bundle


def session_llm(request: pytest.FixtureRequest) -> Any:
    """The tiny-llama bundle, built once per session cache."""
    from harness.models import build_model
    from harness.models.tiny_llama import TinyLlamaConfig

    root = session_cache(request)
    key = root / "tiny-llama"
    if key not in _BUNDLES:
        _BUNDLES[key] = build_model(TinyLlamaConfig(name="tiny-llama"))
    return _BUNDLES[key]


def build(name: str, bundle: ModelBundle) -> BuiltVariant:
    from harness.scenario import VariantsSpec
    from harness.variants import build_variant

    return build_variant(name, bundle, VariantsSpec())


@pytest.fixture(scope="session")
def servingbench_bundle(request: pytest.FixtureRequest) -> ModelBundle:
    """The digits-cnn model bundle (inputs, labels, reference outputs), built once."""
    return session_bundle(request)


@pytest.fixture(scope="session")
def servingbench_variant(
    servingbench_bundle: ModelBundle,
) -> Callable[[str], BuiltVariant]:
    """`servingbench_variant("onnx")`: a built, validated variant of the bundle."""
    return lambda name: build(name, servingbench_bundle)


class _Live:
    """One server per (class, variant), started on first use; restarted if a test stopped
    it (the teardown check), so no test depends on the order tests run in."""

    def __init__(self, suite: type[_Suite], variant: BuiltVariant, folder: Path) -> None:
        self.suite, self.variant, self.folder = suite, variant, folder
        self.launched: conformance.Launched | None = None
        self.starts = 0
        self.failed: LaunchError | None = None

    def get(self) -> conformance.Launched:
        if self.failed is not None:  # one wait for a server that cannot start, not one per test
            raise conformance.ConformanceError(f"the server did not start:\n{self.failed}")
        if self.launched is None or self.launched.stopped:
            self.starts += 1
            try:
                self.launched = conformance.launch(
                    self.suite.make_adapter(),
                    self.variant,
                    self.folder / f"start-{self.starts}",
                    self.suite.startup_timeout_s,
                )
            except LaunchError as exc:
                self.failed = exc
                raise
        return self.launched

    def close(self) -> None:
        if self.launched is not None:
            self.launched.stop()


class _Suite:
    """What every adapter's suite checks: it starts on loopback, reports a taken port, and
    leaves nothing behind. Subclasses add the answers of their workload family."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.conformance]

    adapter_class: ClassVar[type[Adapter[Any]]]
    config: ClassVar[dict[str, Any]] = {}
    variants: ClassVar[list[str] | None] = None
    has_server: ClassVar[bool] = True  # False: nothing is launched (an in-process adapter)
    startup_timeout_s: ClassVar[float] = 120.0

    @classmethod
    def variant_names(cls) -> list[str]:
        raise NotImplementedError

    @classmethod
    def make_adapter(cls) -> Adapter[Any]:
        config = {"kind": cls.adapter_class.kind, **cls.config}
        return cls.adapter_class(cls.adapter_class.config_class.model_validate(config))

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        # class scope: one variant's server is shared by the tests of that variant
        if "sb_variant_name" in metafunc.fixturenames:
            names = self.variant_names()
            metafunc.parametrize("sb_variant_name", names, ids=names, scope="class")

    def _needs_server(self) -> None:
        if not self.has_server:
            pytest.skip(f"{self.adapter_class.kind} starts no server (has_server = False)")

    # ------------------------------------------------------------ fixtures

    # class-scoped fixtures are classmethods: they run once per class, not per instance

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def sb_available(cls) -> None:
        found = cls.adapter_class.availability()
        if not found.available:
            pytest.skip(f"adapter {cls.adapter_class.kind} is not available: {found.reason}")

    @pytest.fixture(scope="class")
    @classmethod
    def sb_live(
        cls, sb_variant: BuiltVariant, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[_Live]:
        live = _Live(cls, sb_variant, tmp_path_factory.mktemp(f"conf-{sb_variant.name}"))
        yield live
        live.close()

    # ------------------------------------------------------------ the contract

    def test_starts_ready_on_loopback(self, sb_live: _Live) -> None:
        """Free loopback ports, ready (model loaded) within the timeout, via ProcessLauncher."""
        conformance.check_ready(sb_live.get(), self.startup_timeout_s)

    def test_listens_only_on_loopback(self, sb_live: _Live) -> None:
        self._needs_server()
        conformance.check_loopback_only(sb_live.get())

    def test_taken_port_is_a_clear_launch_error(
        self, sb_variant: BuiltVariant, tmp_path: Path
    ) -> None:
        self._needs_server()
        error = conformance.check_port_taken(
            self.make_adapter(), sb_variant, tmp_path, self.startup_timeout_s
        )
        print(f"taken port -> {str(error).splitlines()[0]}")

    def test_teardown_leaves_nothing(self, sb_live: _Live) -> None:
        self._needs_server()
        conformance.check_teardown(sb_live.get())


class AdapterConformance(_Suite):
    """A tensor-serving adapter's suite: subclass with `adapter_class` set (module doc)."""

    samples: ClassVar[int] = 16  # test inputs compared with the reference
    atol: ClassVar[float] = 1e-4
    rtol: ClassVar[float] = 1e-4

    @classmethod
    def variant_names(cls) -> list[str]:
        if cls.variants is not None:
            return list(cls.variants)
        from harness.variants import VARIANT_NAMES, variant_availability

        served = cls.adapter_class.variants
        return [v for v in VARIANT_NAMES if v in served and variant_availability(v)[0]]

    @pytest.fixture(scope="class")
    @classmethod
    def sb_bundle(cls, request: pytest.FixtureRequest) -> ModelBundle:
        return session_bundle(request)

    @pytest.fixture(scope="class")
    @classmethod
    def sb_variant(cls, sb_bundle: ModelBundle, sb_variant_name: str) -> BuiltVariant:
        if sb_variant_name not in cls.adapter_class.variants:
            pytest.fail(f"{cls.adapter_class.kind} does not serve {sb_variant_name}")
        variant = build(sb_variant_name, sb_bundle)
        if not variant.ok:
            pytest.skip(f"variant {sb_variant_name} failed validation: {variant.validation}")
        return variant

    @pytest.fixture(scope="class")
    @classmethod
    def sb_inputs(cls, sb_bundle: ModelBundle) -> np.ndarray:
        return sb_bundle.x_test[: cls.samples]

    def test_answers_match_reference(
        self, sb_live: _Live, sb_variant: BuiltVariant, sb_inputs: np.ndarray
    ) -> None:
        server = sb_live.get().server
        adapter = sb_live.get().request.adapter
        conformance.check_answers(adapter, server, sb_variant, sb_inputs, self.atol, self.rtol)

    def test_load_engine_requests_match_reference(
        self, sb_live: _Live, sb_variant: BuiltVariant, sb_inputs: np.ndarray
    ) -> None:
        """What `endpoint()` pre-encodes, sent by the real load engine, answers correctly."""
        launched = sb_live.get()
        conformance.check_load_path(
            launched.request.adapter, launched.server, sb_variant, sb_inputs, self.atol
        )

    def test_bad_artifact_fails_clearly(
        self, sb_variant: BuiltVariant, sb_inputs: np.ndarray, tmp_path: Path
    ) -> None:
        how = conformance.check_bad_artifact(
            self.make_adapter(), sb_variant, sb_inputs, tmp_path, self.startup_timeout_s
        )
        print(f"corrupt artifact -> {how}")

    def test_container_spec_is_well_formed(self, sb_variant: BuiltVariant, tmp_path: Path) -> None:
        adapter = self.make_adapter()
        adapter.prepare(sb_variant, tmp_path)
        try:
            spec = adapter.container_spec(sb_variant, tmp_path)
        finally:
            adapter.cleanup(tmp_path)
        if spec is None:
            pytest.skip(f"{self.adapter_class.kind} has no container recipe")
        conformance.check_container_spec(spec)


class GenerationConformance(_Suite):
    """A generative (streaming) adapter's suite, on the tiny-llama model: greedy tokens and
    token accounting as the run's fidelity check makes them, and streams under load."""

    min_agreement: ClassVar[float] = 0.8  # greedy next-token agreement required
    output_tokens: ClassVar[int] = 8  # forced per generation
    concurrency: ClassVar[int] = 2

    @classmethod
    def variant_names(cls) -> list[str]:
        if cls.variants is not None:
            return list(cls.variants)
        from harness.variants import LLM_VARIANT_NAMES

        return [v for v in LLM_VARIANT_NAMES if v in cls.adapter_class.variants]

    @pytest.fixture(scope="class")
    @classmethod
    def sb_llm(cls, request: pytest.FixtureRequest) -> Any:
        return session_llm(request)

    @pytest.fixture(scope="class")
    @classmethod
    def sb_variant(cls, sb_llm: Any, sb_variant_name: str) -> BuiltVariant:
        from harness.llm.variants import build_llm_variant
        from harness.scenario import VariantsSpec

        variant = build_llm_variant(sb_variant_name, sb_llm, VariantsSpec())
        if not variant.ok:
            pytest.skip(f"variant {sb_variant_name} failed validation: {variant.validation}")
        return variant

    @pytest.fixture(scope="class")
    @classmethod
    def sb_requests(cls, sb_llm: Any) -> list[Any]:
        from harness.llm.workload import FixedLength, UniformLength, WorkloadSpec, make_requests

        spec = WorkloadSpec(
            prompt_tokens=UniformLength(kind="uniform", min=16, max=48),
            output_tokens=FixedLength(kind="fixed", value=cls.output_tokens),
            samples=8,
        )
        return make_requests(spec, sb_llm.tokenizer(), seed=0, context=2048)

    def test_greedy_tokens_and_token_accounting(
        self, sb_live: _Live, sb_variant: BuiltVariant, sb_requests: list[Any]
    ) -> None:
        launched = sb_live.get()
        note = conformance.check_generations(
            launched.request.adapter, launched.server, sb_variant, sb_requests, self.min_agreement
        )
        print(f"fidelity -> {note}")

    def test_load_engine_streams_exact_tokens(self, sb_live: _Live, sb_requests: list[Any]) -> None:
        launched = sb_live.get()
        done = conformance.check_streams_under_load(
            launched.request.adapter, launched.server, sb_requests, self.concurrency
        )
        print(f"streams -> {done} generations")
