"""KServe InferenceService manifests for a scenario's targets (`servingbench k8s manifest`).

No cluster is contacted: this writes YAML for `kubectl apply -f`. Which predictor a target
gets is the adapter's to say (`Adapter.kserve_predictor`, `k8s.runtime` overrides the
runtime): a custom predictor runs the adapter's own server container, and KServe's built-in
runtimes (pytorch for TorchServe, triton, huggingface with vLLM) load `k8s.storage_uri`
themselves. An adapter without a recipe cannot be deployed this way, and the error says so.

Every predictor gets the same resources (requests = limits, as the local benchmark pins
its CPUs), replicas, autoscaling target and optional batcher sidecar. The settings come
from the adapter (`Adapter.k8s_settings`: the kserve adapter's `k8s:` block), then
`--set key=value`. Once deployed, an `external` target can point at the service's URL.

`python -m harness.k8s --check < manifest.yaml`, run with the kserve environment's Python,
rebuilds the manifest with the KServe SDK's model classes (`V1beta1InferenceService`, ...),
rejecting unknown fields, and checks that it serializes back unchanged.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.config import apply_sets
from harness.errors import ConfigError, ServingBenchError
from harness.k8s_spec import (
    GRPC_PORT,
    HTTP_PORT,
    KSERVE_SDK_ENV,
    MODEL_DIR,
    K8sSpec,
    KServePredictor,
)

API_VERSION = "serving.kserve.io/v1beta1"


def dns_name(text: str) -> str:
    """A target name as a Kubernetes object name (lowercase RFC 1123 label)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = name if name[:1].isalpha() else f"sb-{name}"
    return name[:63].rstrip("-")


def build_inference_service(
    name: str,
    spec: K8sSpec,
    predictor_of: KServePredictor,
    *,
    cpus: int | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The InferenceService as a plain dict, from the settings and what the adapter
    declared; `cpus` is the default CPU count. Nothing here reads files."""
    runtime, container = predictor_of.runtime, predictor_of.container
    if spec.storage_uri is None:
        raise ValueError(
            f"k8s.storage_uri is not set: where the model files for the {runtime} runtime are "
            "(s3://, gs://, pvc://...); set it in the adapter's k8s block or with --set"
        )
    cpu = spec.resources.cpu or str(cpus or 1)
    amounts = {"cpu": cpu, "memory": spec.resources.memory}
    limits = {
        **amounts,
        **({"nvidia.com/gpu": str(spec.resources.gpus)} if spec.resources.gpus else {}),
    }
    resources = {"requests": dict(amounts), "limits": limits}
    # the same thread count as the local benchmark gives a server: its CPUs
    threads = str(int(float(cpu))) if not cpu.endswith("m") and float(cpu) >= 1 else "1"
    env = [{"name": "OMP_NUM_THREADS", "value": threads}]
    predictor: dict[str, Any] = {"minReplicas": spec.min_replicas, "maxReplicas": spec.max_replicas}
    optional = {"scaleMetric": spec.scale_metric, "scaleTarget": spec.scale_target,
                "containerConcurrency": spec.container_concurrency}  # fmt: skip
    predictor.update({k: v for k, v in optional.items() if v is not None})
    if spec.batcher is not None:
        predictor["batcher"] = {"maxBatchSize": spec.batcher.max_batch_size,
                                "maxLatency": spec.batcher.max_latency_ms}  # fmt: skip
        if spec.batcher.timeout_s is not None:
            predictor["batcher"]["timeout"] = spec.batcher.timeout_s
    if runtime == "custom":
        if container is None or spec.image is None:
            raise ValueError(
                "the custom runtime runs servingbench's KServe server: set k8s.image to an image "
                "with servingbench and its kserve requirements installed"
            )
        env += [{"name": "SERVINGBENCH_THREADS", "value": threads},
                {"name": "STORAGE_URI", "value": spec.storage_uri}]  # fmt: skip
        args = [*container.get("args", []), *spec.args]
        predictor["containers"] = [{"name": "kserve-container", "image": spec.image,
                                    **container, "args": args, "env": env,
                                    "resources": resources}]  # fmt: skip
    else:
        model: dict[str, Any] = {"modelFormat": {"name": runtime}, "storageUri": spec.storage_uri}
        if predictor_of.protocol_version:
            model["protocolVersion"] = predictor_of.protocol_version
        if spec.runtime_version:
            model["runtimeVersion"] = spec.runtime_version
        args = [*predictor_of.args, *spec.args]
        if args:
            model["args"] = args
        model.update(env=env, resources=resources)
        predictor["model"] = model
    metadata: dict[str, Any] = {"name": spec.name or dns_name(name)}
    if spec.namespace:
        metadata["namespace"] = spec.namespace
    notes = dict(annotations or {})
    if spec.deployment_mode:
        notes["serving.kserve.io/deploymentMode"] = spec.deployment_mode
    if notes:
        metadata["annotations"] = notes
    return {"apiVersion": API_VERSION, "kind": "InferenceService", "metadata": metadata,
            "spec": {"predictor": predictor}}  # fmt: skip


def settings(target: Any, base: K8sSpec, sets: Iterable[str] = ()) -> K8sSpec:
    """The adapter's k8s settings for the target with `key=value` overrides (dotted keys
    for nested fields, values read as YAML)."""
    data = apply_sets(base.model_dump(exclude_unset=True), sets)
    try:
        return K8sSpec.model_validate(data)
    except ValidationError as exc:
        problems = [(".".join(map(str, e["loc"])) or "k8s", e["msg"]) for e in exc.errors()]
        raise ConfigError(f"target {target.name}: k8s settings", problems) from None


def manifest_for(scenario_path: Path, target_name: str, sets: Iterable[str] = ()) -> str:
    """The YAML manifest of one target of a scenario file; ConfigError says what is missing."""
    from harness import registry
    from harness.scenario import load_scenario, target_by_name

    scenario = load_scenario(scenario_path)
    [target] = target_by_name(scenario, [target_name])
    adapter = registry.adapters()[target.adapter.kind](target.adapter)
    spec = settings(target, adapter.k8s_settings(), sets)
    declared = adapter.kserve_predictor(target.variant, MODEL_DIR, HTTP_PORT, GRPC_PORT)
    if declared is None and spec.runtime is None:
        raise ConfigError(
            f"target {target.name}",
            [("k8s.runtime", f"no KServe runtime for {adapter.kind} targets: the adapter has "
                             "no KServe recipe; set k8s.runtime to a built-in runtime")],
        )  # fmt: skip
    predictor_of = declared or KServePredictor(spec.runtime)  # type: ignore[arg-type]
    if spec.runtime is not None and spec.runtime != predictor_of.runtime:
        if spec.runtime == "custom":
            raise ConfigError(
                f"target {target.name}",
                [("k8s.runtime", f"{adapter.kind} has no KServe container recipe: use a "
                                 "kserve target")],
            )  # fmt: skip
        predictor_of = replace(predictor_of, runtime=spec.runtime, container=None)
    cpus = scenario.resources.server_cpus
    notes = {"servingbench.io/scenario": scenario.name, "servingbench.io/target": target.name,
             "servingbench.io/variant": target.variant}  # fmt: skip
    try:
        manifest = build_inference_service(
            target.name, spec, predictor_of, cpus=len(cpus) if cpus else None, annotations=notes
        )
    except ValueError as exc:
        raise ConfigError(f"target {target.name}", [("k8s", str(exc))]) from None
    return to_yaml(manifest)


def to_yaml(manifest: dict[str, Any]) -> str:
    return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)


# ---------------------------------------------------------------- the SDK check


def check_with_sdk(text: str, python: Path, env: dict[str, str]) -> None:
    """Validate YAML with the KServe SDK, run by `python` (the kserve environment's: kserve
    must not be imported in the harness). ServingBenchError lists what the SDK rejected."""
    done = subprocess.run(
        [str(python), "-m", "harness.k8s", "--check"],
        input=text, capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise ServingBenchError(
            f"the KServe SDK rejects the manifest:\n{done.stdout}{done.stderr[-3000:]}"
        )


def check_in_kserve_env(text: str) -> None:
    """`check_with_sdk` in the environment that has the KServe SDK (created on first use;
    the KServe model server's adapter runs in the same one)."""
    from harness import environments

    python = environments.ensure(KSERVE_SDK_ENV)
    check_with_sdk(text, python, {**os.environ, **environments.server_env(KSERVE_SDK_ENV)})


def sdk_problems(doc: Any) -> list[str]:
    """What KServe's SDK models reject in `doc` (an InferenceService as a dict); [] if none."""
    from kserve.api_client import ApiClient  # kubernetes' own one writes snake_case

    problems: list[str] = []
    built = _build(doc, "V1beta1InferenceService", "", problems)
    if not problems:
        # the SDK may add defaults (V1beta1ModelSpec writes name: ""), never drop or change
        back = ApiClient().sanitize_for_serialization(built)
        problems += [
            f"{path or '.'}: changed by the SDK's round trip" for path in _changed(doc, back)
        ]
    return problems


def _changed(ours: Any, back: Any, path: str = "") -> list[str]:
    """Paths where `back` lost or altered what `ours` says (keys it added are fine)."""
    if isinstance(ours, dict) and isinstance(back, dict):
        lost = [f"{path}.{k}" for k in ours if k not in back]
        return lost + [p for k, v in ours.items() if k in back
                       for p in _changed(v, back[k], f"{path}.{k}")]  # fmt: skip
    if isinstance(ours, list) and isinstance(back, list) and len(ours) == len(back):
        return [p for i, (a, b) in enumerate(zip(ours, back, strict=True))
                for p in _changed(a, b, f"{path}[{i}]")]  # fmt: skip
    return [] if ours == back and type(ours) is type(back) else [path]


_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "object": (object,),
}  # fmt: skip


def _build(data: Any, klass: str, path: str, problems: list[str]) -> Any:
    """Like the SDK's own deserializer, but an unknown field is an error, not dropped."""
    import kserve.models
    from kubernetes.client import models as k8s_models

    # the kubernetes client (pydantic models) writes List[X] and Dict[str, X]
    klass = re.sub(r"^List\[(.*)\]$", r"list[\1]", re.sub(r"^Dict\[(.*)\]$", r"dict(\1)", klass))
    if klass.startswith("list["):
        if not isinstance(data, list):
            problems.append(f"{path or '.'}: expected a list, got {data!r}")
            return None
        return [_build(v, klass[5:-1], f"{path}[{i}]", problems) for i, v in enumerate(data)]
    if klass.startswith("dict("):
        value_type = klass[5:-1].split(", ", 1)[1]
        if not isinstance(data, dict):
            problems.append(f"{path or '.'}: expected a mapping, got {data!r}")
            return None
        return {k: _build(v, value_type, f"{path}.{k}", problems) for k, v in data.items()}
    if klass in _PRIMITIVES:
        wrong_bool = isinstance(data, bool) and klass in ("int", "float")
        if wrong_bool or not isinstance(data, _PRIMITIVES[klass]):
            problems.append(f"{path or '.'}: expected {klass}, got {data!r}")
        return data
    cls = getattr(kserve.models, klass, None) or getattr(k8s_models, klass, None)
    if cls is None:  # a type without a model class (e.g. a quantity): kept as written
        return data
    if not isinstance(data, dict):
        problems.append(f"{path or '.'}: expected a {klass} mapping, got {data!r}")
        return None
    fields = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    kwargs, before = {}, len(problems)
    for key, value in data.items():
        if key not in fields:
            problems.append(f"{path}.{key}: not a field of {klass}")
            continue
        attr = fields[key]
        kwargs[attr] = _build(value, cls.openapi_types[attr], f"{path}.{key}", problems)
    if len(problems) > before:  # already said what is wrong inside: no cascade
        return None
    try:
        return cls(**kwargs)
    except ValueError as exc:  # the SDK's client-side validation (required fields, enums)
        problems.append(f"{path or '.'}: {exc}")
        return None


def main(argv: list[str] | None = None) -> int:
    """`--check`: validate the YAML documents on stdin with the SDK (kserve environment)."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--check"]:
        print("usage: python -m harness.k8s --check < manifest.yaml", file=sys.stderr)
        return 2
    failed = 0
    for index, doc in enumerate(d for d in yaml.safe_load_all(sys.stdin) if d is not None):
        for problem in sdk_problems(doc):
            failed += 1
            print(f"document {index}: {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
