"""Run an adapter's server in a Docker container (the adapter's `container_spec()`).

Project images (`servingbench/<name>:<flavour>`) are built from `docker/<name>.Dockerfile`
with a small explicit context (harness/, adapters/, docker/); other images are pulled only
when allowed. The container gets CPU/memory limits, GPUs only when asked, its ports
published on 127.0.0.1 only, and the spec's mounts. Its output is streamed into the run
folder's log file. Readiness is polled while watching the container's state; an exit,
a timeout or any error raises LaunchError with the last log lines. The container is
removed on every exit path: stop(), errors and Ctrl-C during start, and an atexit hook.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import NonNegativeInt, PositiveFloat

from harness.adapter import ContainerSpec, Server
from harness.errors import LaunchError
from harness.launchers.base import Launcher, LauncherConfig, LaunchRequest, fill, fill_env, tail
from harness.net import LOOPBACK, free_port

PROJECT = Path(__file__).resolve().parents[2]
PROJECT_PREFIX = "servingbench/"
LABEL = "servingbench.launcher"
RUN_LABEL, OWNER_LABEL = "servingbench.run", "servingbench.owner"  # what `clean` matches
CONTEXT_DIRS = ("harness", "adapters", "docker")
# build args per project-image flavour (the tag); the default flavour builds on the local base
FLAVOURS: dict[str, dict[str, str]] = {
    "cuda": {
        "BASE": "nvidia/cuda:12.4.1-runtime-ubuntu22.04",
        "PYTHON": "python3.11",
        "ONNXRUNTIME": "onnxruntime-gpu",
    },
}
_live: dict[str, Any] = {}  # container id -> docker Container, removed at exit at the latest
# container id -> the supervisor that removes it if servingbench dies (even by SIGKILL)
_watchdogs: dict[str, subprocess.Popen[bytes]] = {}


class DockerConfig(LauncherConfig):
    kind: Literal["docker"] = "docker"
    cpus: PositiveFloat | None = None
    memory: str | None = None  # docker syntax: "2g", "512m"
    gpus: NonNegativeInt = 0
    shm_size: str | None = None  # default: the adapter's
    image: str | None = None  # override the adapter's image
    build: bool = True  # build project images from docker/
    pull: bool = False  # pull other images when missing
    privileged: bool = False
    ulimits: dict[str, int | tuple[int, int]] | None = None
    stop_grace_s: PositiveFloat = 10.0


def _client() -> Any:
    try:  # by name: mypy would take the repository's docker/ folder for the SDK
        docker: Any = importlib.import_module("docker")
    except ImportError as exc:
        raise LaunchError(
            "the docker launcher needs the `docker` SDK (pip install docker)"
        ) from exc
    if not hasattr(docker, "from_env"):  # only the repository's docker/ folder was found
        raise LaunchError("the docker launcher needs the `docker` SDK (pip install docker)")
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        raise LaunchError(f"no Docker engine answers: {exc} (see `servingbench doctor`)") from exc
    return client


def build_context() -> bytes:
    """A tar of harness/, adapters/ and docker/ (no caches, no venv, no results)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for top in CONTEXT_DIRS:
            for path in sorted((PROJECT / top).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    tar.add(path, arcname=str(path.relative_to(PROJECT)), recursive=False)
        ca = _host_ca()
        if ca is not None:  # pip inside the build trusts what pip here trusts
            tar.add(ca, arcname="docker/build-ca.crt", recursive=False)
    return buffer.getvalue()


def _host_ca() -> Path | None:
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    return None


def ensure_image(client: Any, image: str, *, build: bool, pull: bool, log_path: Path) -> Any:
    """The image, built from docker/ (project images) or pulled (others, when allowed)."""
    from docker.errors import APIError, ImageNotFound

    if image.startswith(PROJECT_PREFIX) and build:
        name, _, flavour = image.removeprefix(PROJECT_PREFIX).partition(":")
        dockerfile = PROJECT / "docker" / f"{name}.Dockerfile"
        if not dockerfile.exists():
            raise LaunchError(f"no {dockerfile.relative_to(PROJECT)} to build {image} from")
        _build(client, image, f"docker/{name}.Dockerfile", FLAVOURS.get(flavour, {}), log_path)
        return client.images.get(image)
    try:
        return client.images.get(image)
    except ImageNotFound:
        if not pull:
            raise LaunchError(
                f"image {image} is not here and pulling is off (set pull: true, or build it)"
            ) from None
    try:
        return client.images.pull(image)
    except APIError as exc:
        raise LaunchError(f"could not pull {image}: {exc.explanation or exc}") from exc


def _build(client: Any, tag: str, dockerfile: str, args: dict[str, str], log_path: Path) -> None:
    from docker.errors import APIError

    lines: list[str] = []
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"--- docker build {tag} ({dockerfile}, args {args}) ---\n")
        try:
            stream = client.api.build(
                fileobj=io.BytesIO(build_context()), custom_context=True, dockerfile=dockerfile,
                tag=tag, buildargs=args, network_mode="host", rm=True, forcerm=True, decode=True,
            )  # fmt: skip
            for chunk in stream:
                text = chunk.get("stream") or chunk.get("status") or ""
                if "error" in chunk:
                    text = f"ERROR: {chunk['error']}\n"
                    lines.append(text.strip())
                    log.write(text)
                    raise LaunchError(
                        f"docker build of {tag} failed (log: {log_path}){_base_hint(text)}",
                        "\n".join(lines[-30:]),
                    )
                if text:
                    log.write(text if text.endswith("\n") else text + "\n")
                    lines.extend(text.rstrip("\n").splitlines())
        except APIError as exc:
            raise LaunchError(f"docker build of {tag} failed: {exc.explanation or exc}") from exc


def _base_hint(error: str) -> str:
    if "servingbench/base" in error:
        return "; build the local base image first: docker/base/build.sh"
    return ""


def _ulimits(values: dict[str, int | tuple[int, int]] | None) -> list[Any] | None:
    if not values:
        return None
    from docker.types import Ulimit

    out = []
    for name, value in values.items():
        soft, hard = value if isinstance(value, tuple) else (value, value)
        out.append(Ulimit(name=name, soft=soft, hard=hard))
    return out


class DockerLauncher(Launcher):
    kind: ClassVar[str] = "docker"
    config_class = DockerConfig
    description = "Docker container: limits, GPUs on request, ports on 127.0.0.1, logs"
    config: DockerConfig

    def start(self, request: LaunchRequest) -> Server:
        adapter = request.adapter
        request.workdir.mkdir(parents=True, exist_ok=True)
        request.log_path.parent.mkdir(parents=True, exist_ok=True)
        adapter.prepare(request.variant, request.workdir)
        spec = adapter.container_spec(request.variant, request.workdir, gpus=self.config.gpus > 0)
        if spec is None:
            raise LaunchError(f"{request.target}: adapter {adapter.kind} has no container recipe")
        client = _client()
        image = ensure_image(
            client,
            self.config.image or spec.image,
            build=self.config.build,
            pull=self.config.pull,
            log_path=request.log_path,
        )
        host_ports = {name: free_port() for name in spec.ports}
        started = time.perf_counter()
        container = self._create(client, image, spec, host_ports, request)
        server = Server(
            base_url=adapter.base_url(LOOPBACK, host_ports),
            ports=host_ports,
            variant=request.variant,
            log_path=request.log_path,
            info={"threads": self._threads(request), "container": _describe(container, image)},
        )
        try:
            self._run(container, request)
            self._wait_ready(container, server, request)
        except BaseException:
            self.stop(server)
            raise
        server.startup_s = time.perf_counter() - started
        return server

    def _threads(self, request: LaunchRequest) -> int:
        cpus = self.config.cpus
        return max(1, int(cpus)) if cpus else request.threads

    def _options(self, spec: ContainerSpec, request: LaunchRequest) -> dict[str, Any]:
        """The options the user chose; the risky ones only when set (the engine may refuse)."""
        cfg = self.config
        options: dict[str, Any] = {}
        if cfg.cpus:
            options["nano_cpus"] = int(cfg.cpus * 1e9)
        if cfg.memory:
            options["mem_limit"] = cfg.memory
        if request.server_cpus:
            options["cpuset_cpus"] = ",".join(str(c) for c in request.server_cpus)
        if cfg.shm_size or spec.shm_size:
            options["shm_size"] = cfg.shm_size or spec.shm_size
        if cfg.gpus:
            from docker.types import DeviceRequest

            options["device_requests"] = [DeviceRequest(count=cfg.gpus, capabilities=[["gpu"]])]
        if cfg.privileged:
            options["privileged"] = True
        if cfg.ulimits:
            options["ulimits"] = _ulimits(cfg.ulimits)
        return options

    def _create(
        self,
        client: Any,
        image: Any,
        spec: ContainerSpec,
        host_ports: dict[str, int],
        request: LaunchRequest,
    ) -> Any:
        from docker.errors import APIError

        threads = self._threads(request)
        env = {"SERVINGBENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
               **fill_env(spec.env, request, threads)}  # fmt: skip
        volumes = {
            host: {"bind": inside, "mode": "ro" if inside in spec.read_only else "rw"}
            for host, inside in spec.mounts.items()
        }
        ports = {f"{inside}/tcp": (LOOPBACK, host_ports[n]) for n, inside in spec.ports.items()}
        options = self._options(spec, request)
        try:
            container = client.containers.create(
                image.id, command=fill(spec.command, request, threads), environment=env,
                ports=ports, volumes=volumes,
                labels={LABEL: "1", "servingbench.target": request.target,
                        RUN_LABEL: request.run_id, OWNER_LABEL: str(os.getpid())}, detach=True,
                **options,
            )  # fmt: skip
        except APIError as exc:
            raise self._refused("create", exc, options) from exc
        _live[container.id] = container
        _watchdogs[container.id] = _watchdog(container.id)
        return container

    def _run(self, container: Any, request: LaunchRequest) -> None:
        from docker.errors import APIError

        try:
            container.start()
        except APIError as exc:
            raise self._refused("start", exc, self._options_names()) from exc
        threading.Thread(
            target=_follow, args=(container, request.log_path), daemon=True, name="docker-logs"
        ).start()

    def _options_names(self) -> dict[str, Any]:
        cfg = self.config
        return {"privileged": cfg.privileged, "ulimits": cfg.ulimits, "gpus": cfg.gpus}

    def _refused(self, step: str, exc: Exception, options: dict[str, Any]) -> LaunchError:
        risky = [
            name
            for name in ("privileged", "ulimits", "device_requests", "gpus")
            if options.get(name)
        ]
        message = getattr(exc, "explanation", None) or str(exc)
        if risky:
            return LaunchError(
                f"the Docker engine refused the container ({step}) with option(s) "
                f"{', '.join(risky)} set: {message}"
            )
        return LaunchError(f"the Docker engine refused the container ({step}): {message}")

    def _wait_ready(self, container: Any, server: Server, request: LaunchRequest) -> None:
        deadline = time.monotonic() + request.startup_timeout_s
        pause = 0.1
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                raise LaunchError(
                    f"{request.target}: container exited with code {code} before becoming ready "
                    f"(log: {request.log_path})",
                    _container_tail(container),
                )
            if request.adapter.probe(server):
                return
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"{request.target}: container not ready after "
                    f"{request.startup_timeout_s:g} s (log: {request.log_path})",
                    _container_tail(container) or tail(request.log_path),
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)

    def check(self, server: Server) -> str | None:
        ident = (server.info.get("container") or {}).get("id")
        container = _live.get(ident) if ident else None
        if container is None:
            return None
        try:
            container.reload()
        except Exception as exc:  # the engine lost it (removed behind our back)
            return f"container is gone ({type(exc).__name__}: {exc})"
        if container.status in ("exited", "dead"):
            code = container.attrs.get("State", {}).get("ExitCode")
            return f"container exited with code {code}"
        return None

    def stop(self, server: Server) -> None:
        ident = (server.info.get("container") or {}).get("id")
        container = _live.get(ident) if ident else None
        if container is None:
            return
        with contextlib.suppress(Exception):
            container.stop(timeout=int(self.config.stop_grace_s))
        _remove(container)
        _live.pop(container.id, None)
        _end_watchdog(container.id)


def _describe(container: Any, image: Any) -> dict[str, Any]:
    return {
        "id": container.id,
        "name": container.name,
        "image": (image.tags or [image.id])[0],
        "image_id": image.id,
        "repo_digests": image.attrs.get("RepoDigests", []),
    }


def _container_tail(container: Any, lines: int = 30) -> str:
    with contextlib.suppress(Exception):
        return str(container.logs(tail=lines).decode("utf-8", "replace")).rstrip()
    return ""


def _follow(container: Any, log_path: Path) -> None:
    """Copy the container's output into the run folder's log until it is gone."""
    with contextlib.suppress(Exception), open(log_path, "ab") as log:
        for chunk in container.logs(stream=True, follow=True):
            log.write(chunk)
            log.flush()


def _docker_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    return host.removeprefix("unix://") if host.startswith("unix://") else "/var/run/docker.sock"


def _watchdog(container_id: str) -> subprocess.Popen[bytes]:
    """The supervisor that removes this container if servingbench dies before it does."""
    from harness.launchers.process import SUPERVISOR

    return subprocess.Popen(
        [sys.executable, "-I", str(SUPERVISOR), "--owner", str(os.getpid()),
         "--container", container_id, "--docker-socket", _docker_socket()],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def _end_watchdog(container_id: str) -> None:
    watchdog = _watchdogs.pop(container_id, None)
    if watchdog is not None:  # the container is gone already: its removal is a no-op
        with contextlib.suppress(ProcessLookupError):
            watchdog.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            watchdog.wait(10)


def _remove(container: Any) -> None:
    from docker.errors import NotFound

    with contextlib.suppress(NotFound):
        container.remove(force=True)


@atexit.register
def _remove_all() -> None:
    for ident in list(_live):
        with contextlib.suppress(Exception):
            _remove(_live.pop(ident))
        _end_watchdog(ident)
