"""Feeding images to a network: decoding and resizing in DataLoader workers while the main
process runs the forward pass."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..imaging import ImageRejected, load_rgb


def eval_transform(size: int, data_config: dict):
    """Resize the shorter side to `size` and centre-crop a square: the whole image is kept
    for square inputs, and the network's own normalisation is applied."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(data_config["mean"], data_config["std"]),
        ]
    )


def train_transform(size: int, data_config: dict):
    """Light augmentation: a mild crop and scale, small colour changes; no flips, since
    digits, letters and many objects are not mirror-symmetric."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.RandomResizedCrop(
                size, scale=(0.75, 1.0), ratio=(0.9, 1.1),
                interpolation=transforms.InterpolationMode.BICUBIC,
            ),
            transforms.ColorJitter(0.2, 0.2),
            transforms.ToTensor(),
            transforms.Normalize(data_config["mean"], data_config["std"]),
        ]
    )


class ImageFiles(Dataset):
    """(tensor, position, ok) per file; an unreadable file yields zeros and ok=False
    instead of stopping the whole pass."""

    def __init__(self, paths: Sequence[str], transform, max_pixels: int, size: int,
                 labels: Sequence[int] | None = None):
        self.paths = list(paths)
        self.transform = transform
        self.max_pixels = max_pixels
        self.size = size
        self.labels = None if labels is None else list(labels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        label = -1 if self.labels is None else self.labels[index]
        try:
            image, _ = load_rgb(self.paths[index], self.max_pixels)
        except ImageRejected:
            return torch.zeros(3, self.size, self.size), index, False, label
        return self.transform(image), index, True, label


def make_loader(dataset: Dataset, batch_size: int, workers: int, shuffle: bool = False,
                seed: int = 0, persistent: bool = False) -> DataLoader:
    """Worker processes are spawned, not forked: a fork of a process that already runs
    torch's thread pools can deadlock. `persistent` keeps them between passes (epochs),
    since spawning one means importing torch again."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        persistent_workers=persistent and workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=generator,
        multiprocessing_context="spawn" if workers > 0 else None,
    )


def autocast(device: str):
    """Mixed precision on CUDA; plain float32 on the CPU."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def features_and_logits(model: torch.nn.Module, batch: torch.Tensor, classifier: bool):
    pooled = model.forward_head(model.forward_features(batch), pre_logits=True)
    logits = model.get_classifier()(pooled) if classifier else None
    return pooled, logits


def eval_loader(paths: Sequence[str], config, data_config: dict,
                persistent: bool = False) -> DataLoader:
    dataset = ImageFiles(paths, eval_transform(config.input_size, data_config),
                         config.max_pixels, config.input_size)
    return make_loader(dataset, config.batch_size, config.workers, persistent=persistent)


def forward(model: torch.nn.Module, loader: DataLoader, device: str, classifier: bool):
    """Yields (positions, ok, features, logits) per batch: positions index the loader's
    dataset, ok marks the readable images, and features and logits (numpy) are for those
    only (None when a batch has none)."""
    model = model.to(device).eval()
    with torch.inference_mode():
        for batch, positions, ok, _labels in loader:
            ok = ok.numpy().astype(bool)
            if not ok.any():
                yield positions.numpy(), ok, None, None
                continue
            with autocast(device):
                pooled, logits = features_and_logits(model, batch[ok].to(device), classifier)
            yield (positions.numpy(), ok, pooled.float().cpu().numpy(),
                   None if logits is None else logits.float().cpu().numpy())


def run_model(
    model: torch.nn.Module,
    ids: Sequence[int],
    paths: Sequence[str],
    config,
    data_config: dict,
    sink: Callable[[np.ndarray, np.ndarray, np.ndarray | None], None],
    progress: Callable[[float, str], None],
    classifier: bool,
) -> list[int]:
    """Forward every image once; `sink(ids, features, logits)` gets each batch's readable
    images. Returns the ids of files that could not be read."""
    loader = eval_loader(paths, config, data_config)
    ids_array = np.asarray(ids, dtype=np.int64)
    failed: list[int] = []
    done = 0
    for positions, ok, pooled, logits in forward(model, loader, config.resolved_device(),
                                                 classifier):
        failed.extend(int(i) for i in ids_array[positions[~ok]])
        if ok.any():
            sink(ids_array[positions[ok]], pooled, logits)
        done += len(positions)
        progress(done / len(paths), f"embedded {done} of {len(paths)} images")
    return failed
