"""Image encoders for the ``vision`` view: the packaged MobileNetV2, or any torch module
named by dotted path, run eagerly in torch or exported once to ONNX and run by ONNX Runtime.

An encoder maps a normalised ``(n, 3, s, s)`` float32 batch to ``(n, d)`` features. A module
with ``encode_image`` and ``encode_text`` (CLIP-like: open_clip, or your own) also gives
zero-shot label probabilities from text prompts before any training.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from store.errors import ViewError

log = logging.getLogger("cotrain")

DEFAULT_IMAGE_ENCODER = "mobilenet_v2"


def onnx_cache_dir() -> Path:
    """Where exported ONNX encoders are kept (``cache_home()/onnx``)."""
    from views.encoders import cache_home

    return cache_home() / "onnx"


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def _pooled(out: Any) -> Any:
    """(n, d) features from a module's output: a tensor (pooled if 4-D) or its first element."""
    import torch

    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if out.dim() == 4:
        out = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(out, 1), 1)
    return out.reshape(out.shape[0], -1)


class TorchEncoder:
    """A frozen torch module run eagerly (CPU, or CUDA when asked for / available)."""

    backend = "torch"

    def __init__(self, module: Any, identity: str, device: str, tokenizer: Callable[..., Any] | None = None) -> None:
        self.module = module.to(device).eval()
        self.identity = identity
        self.device = device
        self.tokenizer = tokenizer

    @property
    def has_text_tower(self) -> bool:
        return callable(getattr(self.module, "encode_text", None)) and callable(
            getattr(self.module, "encode_image", None)) and self.tokenizer is not None

    def _image_forward(self, x: Any) -> Any:
        fn = getattr(self.module, "encode_image", None)
        return _pooled(fn(x) if callable(fn) else self.module(x))

    def encode(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            return self._image_forward(x).float().cpu().numpy()

    def encode_text(self, prompts: Sequence[str]) -> np.ndarray:
        import torch

        if not self.has_text_tower:
            raise ViewError(self.identity, "this encoder has no text tower (encode_text + tokenizer)")
        with torch.inference_mode():
            tokens = self.tokenizer(list(prompts))
            if hasattr(tokens, "to"):
                tokens = tokens.to(self.device)
            return _pooled(self.module.encode_text(tokens)).float().cpu().numpy()


class OnnxEncoder:
    """The same image tower exported once to ONNX (cached by identity and input size) and run
    by ONNX Runtime on the CPU: 4-5x the eager torch speed of MobileNetV2 on a 2-core CPU."""

    backend = "onnx"
    has_text_tower = False

    def __init__(self, torch_encoder: TorchEncoder, size: int, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.identity = torch_encoder.identity
        path = self._export(torch_encoder, size)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.path = path

    @staticmethod
    def _export(enc: TorchEncoder, size: int) -> Path:
        import torch

        digest = hashlib.sha256(f"{enc.identity}|{size}|{torch.__version__}".encode()).hexdigest()[:16]
        path = onnx_cache_dir() / f"{digest}.onnx"
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")

        class ImageTower(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = enc.module

            def forward(self, x: Any) -> Any:
                return enc._image_forward(x)

        tower = ImageTower().cpu().eval()
        dummy = torch.zeros(2, 3, size, size)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(tower, (dummy,), str(tmp), input_names=["pixels"], output_names=["features"],
                                  dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                                  dynamo=False)
        except Exception as exc:  # noqa: BLE001 - any exporter failure means: use torch
            tmp.unlink(missing_ok=True)
            raise ViewError(enc.identity, f"cannot export the encoder to ONNX ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); use backend: torch") from None
        finally:
            enc.module.to(enc.device)
        os.replace(tmp, path)  # atomic: a concurrent or killed export never leaves half a file
        log.info("exported image encoder %s to %s", enc.identity, path)
        return path

    def encode(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"pixels": np.ascontiguousarray(batch, dtype=np.float32)})[0]


def check_encoder(encoder: str, tokenizer: str | None = None) -> None:
    """Import a configured encoder (and tokenizer) without calling it: what a dry run checks."""
    from views.registry import import_object

    if encoder == DEFAULT_IMAGE_ENCODER:
        return
    for what, path in (("image encoder", encoder), ("tokenizer", tokenizer)):
        if not path:
            continue
        try:
            obj = import_object(path)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ViewError(encoder, f"cannot import {what} '{path}': {exc}") from None
        if not callable(obj):
            raise ViewError(encoder, f"{what} '{path}' is not callable")


def load_torch_encoder(encoder: str, encoder_params: dict[str, Any], weights: str | None,
                       tokenizer: str | None, tokenizer_params: dict[str, Any], device: str,
                       base_dir: Path) -> TorchEncoder:
    """Build the frozen image encoder named by ``encoder``.

    ``mobilenet_v2`` is the packaged ImageNet model. Anything else is a dotted path to a
    ``torch.nn.Module`` class or a factory returning one (``timm.create_model``,
    ``open_clip.create_model``, ``mypkg.models:make``), called with ``encoder_params``;
    ``weights`` is then an optional state-dict file loaded into it. Nothing is downloaded.
    """
    import torch

    from views.registry import import_object

    wpath = None
    if weights:
        wpath = Path(weights).expanduser()
        if not wpath.is_absolute():
            wpath = base_dir / wpath
        if not wpath.is_file():
            raise ViewError(encoder, f"weights file not found: {wpath}")
    if encoder == DEFAULT_IMAGE_ENCODER:
        from views.vision.mobilenet import mobilenet_v2

        module = mobilenet_v2(wpath)
        identity = f"mobilenet_v2:{wpath or 'imagenet'}"
        return TorchEncoder(module, identity, device)
    try:
        factory = import_object(encoder)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ViewError(encoder, f"cannot import image encoder '{encoder}' (built-in: {DEFAULT_IMAGE_ENCODER}; "
                        f"otherwise a dotted path to a torch module or factory): {exc}") from None
    try:
        module = factory(**encoder_params)
    except Exception as exc:  # noqa: BLE001 - user code: report it on one line
        raise ViewError(encoder, f"building the encoder failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, torch.nn.Module):
        raise ViewError(encoder, f"'{encoder}' returned {type(module).__name__}, not a torch.nn.Module")
    if wpath is not None:
        state = torch.load(str(wpath), map_location="cpu", weights_only=True)
        try:
            module.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except RuntimeError as exc:
            raise ViewError(encoder, f"weights file {wpath} does not fit the encoder: "
                            f"{str(exc).splitlines()[0]}") from None
    for p in module.parameters():
        p.requires_grad_(False)
    tok = None
    if tokenizer:
        try:
            tok_factory = import_object(tokenizer)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ViewError(encoder, f"cannot import tokenizer '{tokenizer}': {exc}") from None
        tok = tok_factory(**tokenizer_params) if tokenizer_params else tok_factory
    params_id = hashlib.sha256(repr(sorted(encoder_params.items())).encode()).hexdigest()[:8]
    return TorchEncoder(module, f"{encoder}({params_id}):{wpath or 'init'}", device, tok)
