"""Build llama.cpp's `llama-server` once, from source, and cache the binary.

No registry or GitHub here, only PyPI: the `llama-cpp-python` sdist vendors the whole
llama.cpp tree, so it is our source tarball. We build only the `llama-server` target
(static, no curl, no web UI downloads) with cmake + ninja; ~10 minutes on 2 cores, then
kept beside the adapter environments (`<envs>/llama.cpp-<version>-<hash>/`, see
harness/environments.py: a throw-away build cache, as the tests use, does not lose it).

Run it ahead of time with `python -m adapters._llamacpp_build` (CI and `nox` do).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import IO

from harness.cache import recipe_hash
from harness.environments import envs_root
from harness.errors import UnavailableError

SDIST = "llama-cpp-python==0.3.36"  # vendors llama.cpp; pinned so the cache key is stable
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",  # no downloads: models are local files
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DGGML_NATIVE=ON",  # the binary is built on, and cached for, the machine that runs it
)


def build_dir() -> Path:
    version = SDIST.split("==")[1]
    return envs_root() / f"llama.cpp-{version}-{recipe_hash(SDIST, CMAKE_FLAGS)}"


def server_binary() -> Path:
    return build_dir() / "bin" / "llama-server"


def is_built() -> bool:
    return (build_dir() / ".complete").exists()


def missing_tools() -> list[str]:
    """What the build needs from the machine (cmake and ninja also come from PyPI)."""
    missing = [t for t in ("c++", "cc") if shutil.which(t) is None]
    missing += [t for t in ("cmake",) if _tool(t) is None]
    return missing + ([] if _tool("ninja") or shutil.which("make") else ["ninja or make"])


def _tool(name: str) -> str | None:
    # the pip packages `cmake` / `ninja` put their binaries beside this Python
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def ensure_built(log: Path | None = None, jobs: int | None = None) -> Path:
    """The cached `llama-server`, built first if needed (UnavailableError on failure)."""
    if is_built():
        return server_binary()
    missing = missing_tools()
    if missing:
        raise UnavailableError(
            f"building llama-server needs {', '.join(missing)} on PATH "
            "(apt-get install -y g++; pip install cmake ninja)"
        )
    final = build_dir()
    final.parent.mkdir(parents=True, exist_ok=True)
    log = log or final.parent / f"{final.name}.log"
    with (
        tempfile.TemporaryDirectory(prefix=".llama-build-", dir=final.parent) as tmp,
        log.open("ab") as out,
    ):
        work = Path(tmp)
        # the sdist of this one package: `--no-binary :all:` would also build pip's build
        # tools (cmake!) from source just to read the sdist's metadata
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                "llama-cpp-python",
                "--disable-pip-version-check",
                "-d",
                str(work),
                SDIST,
            ],
            out,
        )
        sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = work / "build"
        cmake, ninja = _tool("cmake"), _tool("ninja")
        assert cmake
        generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
        _run([cmake, "-S", str(source), "-B", str(build), *generator, *CMAKE_FLAGS], out)
        jobs = jobs or os.cpu_count() or 2
        _run([cmake, "--build", str(build), "--target", "llama-server", "-j", str(jobs)], out)
        staged = work / "staged"
        (staged / "bin").mkdir(parents=True)
        shutil.copy2(build / "bin" / "llama-server", staged / "bin" / "llama-server")
        shutil.copy2(source / "LICENSE", staged / "LICENSE")
        (staged / "SOURCE").write_text(f"{SDIST} (vendor/llama.cpp)\n{' '.join(CMAKE_FLAGS)}\n")
        (staged / ".complete").write_text("ok\n")
        staged.chmod(0o755)
        try:
            staged.rename(final)
        except OSError:  # built concurrently by someone else: theirs is as good as ours
            if not is_built():
                raise
    return server_binary()


def converter_dir() -> Path:
    version = SDIST.split("==")[1]
    return envs_root() / f"llama.cpp-convert-{version}"


def ensure_converter(log: Path) -> Path:
    """llama.cpp's own `convert_hf_to_gguf.py` (with its `gguf-py` and `conversion/`), taken
    from the same sdist and kept beside the binary: it writes GGUF files of the models the
    harness does not export itself (a BERT sentence encoder). Returns the script."""
    final = converter_dir()
    script = final / "convert_hf_to_gguf.py"
    if (final / ".complete").exists():
        return script
    final.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=".llama-convert-", dir=final.parent) as tmp,
        log.open("ab") as out,
    ):
        work = Path(tmp)
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
              "llama-cpp-python", "--disable-pip-version-check", "-d", str(work), SDIST],
             out)  # fmt: skip
        sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
        staged = work / "staged"
        prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
        keep = ("convert_hf_to_gguf.py", "gguf-py/", "conversion/", "LICENSE")
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                       and m.name[len(prefix):].startswith(keep)]  # fmt: skip
            for member in members:
                member.name = member.name[len(prefix) :]
            tar.extractall(staged, members=members, filter="data")
        (staged / ".complete").write_text("ok\n")
        staged.chmod(0o755)
        try:
            staged.rename(final)
        except OSError:  # written concurrently by someone else
            if not (final / ".complete").exists():
                raise
    return script


def _run(cmd: list[str], out: IO[bytes]) -> None:
    out.write(f"$ {' '.join(cmd)}\n".encode())
    out.flush()
    done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise UnavailableError(
            f"building llama-server failed at: {' '.join(cmd[:3])} ... (exit {done.returncode}); "
            f"see {getattr(out, 'name', 'the build log')}"
        )


if __name__ == "__main__":
    started = __import__("time").monotonic()
    path = ensure_built(jobs=int(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(f"llama-server: {path} ({__import__('time').monotonic() - started:.0f} s)")
