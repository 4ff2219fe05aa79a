"""Feeding images to a network: decoding and resizing run beside the forward pass, in
DataLoader worker processes (many cores, a GPU) or in one background thread of the same
process (the default on two cores: no process to spawn, no tensors to pass between processes;
Pillow and torch let go of the GIL while they work)."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..dataset.imaging import ImageRejected, load_rgb


def default_workers(cpus: int | None = None) -> int:
    """Loader processes when the project does not say: none on two cores or fewer (a
    background thread decodes: measured faster there, see bench/embed_throughput.py), else
    enough to keep a GPU fed, leaving a core for the main process."""
    cpus = cpus or os.cpu_count() or 1
    return 0 if cpus <= 2 else min(8, cpus - 1)


def eval_transform(size: int) -> SquareUint8:
    return SquareUint8(size)


class SquareUint8:
    """torchvision's Resize(size, BICUBIC) + CenterCrop(size) + PILToTensor, pixel for pixel,
    as a numpy array (see `collate_arrays`), with a third of the work for grayscale images:
    they are resized as one channel and copied to three after (the three channels of a gray
    image are equal, and resizing works channel by channel). A square image of the right
    size is only copied. `Normalized` batches apply the network's own normalisation to a
    whole batch at once (the same arithmetic as ToTensor and Normalize per image). Reading
    runs beside the forward pass on the same cores: every microsecond here is one the
    network does not get (bench/embed_throughput.py)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> np.ndarray:
        size = self.size
        width, height = image.size
        if (width, height) != (size, size):
            # Resize: the shorter side to `size`, the longer in proportion (rounded down).
            if width <= height:
                width, height = size, int(size * height / width)
            else:
                width, height = int(size * width / height), size
            image = image.resize((width, height), Image.Resampling.BICUBIC)
            if (width, height) != (size, size):  # CenterCrop
                left = int(round((width - size) / 2.0))
                top = int(round((height - size) / 2.0))
                image = image.crop((left, top, left + size, top + size))
        pixels = np.asarray(image)
        if pixels.ndim == 2:
            return np.repeat(pixels[None], 3, axis=0)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))


READER_NICENESS = 10


class Normalized:
    """A loader's batches with uint8 images turned into the network's normalised floats,
    read ahead by a background thread when the loader has no worker processes."""

    def __init__(self, loader: DataLoader, data_config: dict, ahead: int = 4):
        self.loader = loader
        self.mean = np.asarray(data_config["mean"], np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(data_config["std"], np.float32).reshape(1, -1, 1, 1)
        self.ahead = ahead

    def normalize(self, batch):
        """uint8 images to floats in numpy, not torch: this runs in the reading thread, and
        with the stacking and normalising done by torch there the pipeline stayed at 0.80
        of the bare forward even with no image to decode (numpy: 0.87-0.88 with decoding;
        bench/embed_throughput.py): torch's own threads compete with the forward's."""
        images, *rest = batch
        if images.dtype == torch.uint8:
            pixels = images.numpy().astype(np.float32)
            pixels /= 255
            pixels -= self.mean
            pixels /= self.std
            images = torch.from_numpy(pixels)
        return (images, *rest)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        if self.loader.num_workers > 0:
            return (self.normalize(b) for b in self.loader)
        return read_ahead((self.normalize(b) for b in self.loader), self.ahead)


def read_ahead(items: Iterator, ahead: int) -> Iterator:
    """Yield `items`, produced by a background thread up to `ahead` in advance. An error
    there is raised here; stopping early stops the thread."""
    waiting: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        with contextlib.suppress(OSError, AttributeError):
            # Linux gives each thread its own niceness: reading is several times faster than
            # the forward pass, so it can take the CPU time the forward leaves over.
            me = threading.get_native_id()
            niceness = os.getpriority(os.PRIO_PROCESS, me) + READER_NICENESS
            os.setpriority(os.PRIO_PROCESS, me, min(19, niceness))
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        waiting.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            waiting.put((end, None))
        except BaseException as exc:  # handed to the consumer, raised there
            waiting.put((end, exc))

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = waiting.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()


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
        # eval_transform's takes grayscale images as they are and gives uint8 arrays
        # (batched by collate_arrays); a training transform gives float tensors.
        self.uint8 = isinstance(transform, SquareUint8)
        self.transform = transform
        self.max_pixels = max_pixels
        self.size = size
        self.labels = None if labels is None else list(labels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        label = -1 if self.labels is None else self.labels[index]
        try:
            # Checked on import; the decode still fails on damaged data.
            image, _ = load_rgb(self.paths[index], self.max_pixels, verify=False,
                                at_least=self.size, gray_ok=self.uint8)
        except ImageRejected:
            if self.uint8:
                return np.zeros((3, self.size, self.size), np.uint8), index, False, label
            return torch.zeros(3, self.size, self.size), index, False, label
        return self.transform(image), index, True, label


def collate_arrays(items):
    """A batch of eval_transform's uint8 arrays as tensors, stacked by numpy (see
    Normalized.normalize for why not by torch)."""
    images, positions, ok, labels = zip(*items)
    return (torch.from_numpy(np.stack(images)), torch.from_numpy(np.asarray(positions)),
            torch.from_numpy(np.asarray(ok)), torch.from_numpy(np.asarray(labels)))


def make_loader(dataset: Dataset, batch_size: int, workers: int, shuffle: bool = False,
                seed: int = 0, persistent: bool = False, collate=None) -> DataLoader:
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
        collate_fn=collate,
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
                persistent: bool = False) -> Normalized:
    dataset = ImageFiles(paths, eval_transform(config.input_size), config.max_pixels,
                         config.input_size)
    loader = make_loader(dataset, config.batch_size, config.resolved_workers(),
                         persistent=persistent, collate=collate_arrays)
    return Normalized(loader, data_config)


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
            if not ok.all():
                batch = batch[ok]  # (a copy: skipped when every image was read)
            with autocast(device):
                pooled, logits = features_and_logits(model, batch.to(device), classifier)
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
