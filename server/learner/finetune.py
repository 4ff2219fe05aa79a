"""Fine-tuning the whole timm network (the default with CUDA): light augmentation, mixed
precision, class weights, early stopping on a held-out part of the labels."""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from .backbone import create_backbone
from .data import (
    ImageFiles,
    Normalized,
    autocast,
    eval_loader,
    forward,
    make_loader,
    run_model,
    train_transform,
)

HOLDOUT = 0.15
PATIENCE = 2


def _split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    positions = np.arange(len(labels))
    if len(labels) < 8:  # too few to hold any out: train on all, stop by epochs alone
        return positions, positions[:0]
    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 and len(labels) * HOLDOUT >= len(counts) else None
    return train_test_split(positions, test_size=HOLDOUT, random_state=seed, stratify=stratify)


def balanced_weights(targets: np.ndarray, classes: int) -> np.ndarray:
    """n / (classes * count) per class, as scikit-learn's class_weight='balanced': a rare
    class weighs as much in the loss as a common one. A class with no training image (all
    its few labels held out) gets the weight of a class with one."""
    counts = np.bincount(targets, minlength=classes).astype(np.float32)
    return (len(targets) / (classes * np.maximum(counts, 1))).astype(np.float32)


def finetune(learner, paths: list[str], labels: np.ndarray, present: list[int], progress):
    config = learner.config
    device = config.resolved_device()
    torch.manual_seed(config.seed)
    model = create_backbone(config.backbone, config.checkpoint, config.pretrained,
                            num_classes=len(present)).to(device)
    column = {class_id: i for i, class_id in enumerate(present)}
    targets = np.array([column[int(c)] for c in labels])
    train_idx, val_idx = _split(targets, config.seed)
    weights = torch.tensor(balanced_weights(targets[train_idx], len(present)), device=device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    data_config = learner.data_config()
    train_set = ImageFiles([paths[i] for i in train_idx],
                           train_transform(config.input_size, data_config),
                           config.max_pixels, config.input_size, targets[train_idx].tolist())
    loader = Normalized(make_loader(train_set, config.batch_size, config.resolved_workers(),
                                    shuffle=True, seed=config.seed, persistent=True),
                        data_config)
    val_loader = eval_loader([paths[i] for i in val_idx], config, data_config, persistent=True)
    val_weights = weights.cpu()  # the validation loss is computed on the CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=device.startswith("cuda"))
    best_loss, best_state, stale = float("inf"), None, 0
    for epoch in range(config.epochs):

        def report(fraction: float, epoch: int = epoch) -> None:
            progress((epoch + fraction) / config.epochs,
                     f"fine-tuning: epoch {epoch + 1} of {config.epochs}")

        _train_epoch(model, loader, optimizer, scaler, loss_fn, device, report)
        if len(val_idx) == 0:
            continue
        val_loss = _validation_loss(model, val_loader, device, targets[val_idx], val_weights)
        if val_loss is None:
            continue
        if val_loss < best_loss - 1e-4:
            best_loss, best_state, stale = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()


def _train_epoch(model, loader, optimizer, scaler, loss_fn, device: str, report) -> None:
    model.train()
    for step, (batch, _positions, ok, target) in enumerate(loader):
        # BatchNorm cannot train on one image: at small input sizes the last feature maps
        # are 1x1, leaving one value per channel (a batch of 1 is a possible remainder).
        if ok.sum() >= 2:
            batch, target = batch[ok].to(device), target[ok].to(device)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                loss = loss_fn(model(batch), target)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        # Reported per batch, not per epoch, so a long epoch still shows it moving.
        report((step + 1) / len(loader))


def _validation_loss(model, loader, device: str, targets: np.ndarray,
                     weights: torch.Tensor) -> float | None:
    """The weighted loss on the held-out labels; None if none of their files could be read."""
    logits_all, targets_all = [], []
    for positions, ok, _features, logits in forward(model, loader, device, classifier=True):
        if logits is not None:
            logits_all.append(logits)
            targets_all.append(targets[positions[ok]])  # unreadable files drop out of both
    if not logits_all:
        return None
    return float(torch.nn.functional.cross_entropy(
        torch.tensor(np.concatenate(logits_all)), torch.tensor(np.concatenate(targets_all)),
        weight=weights,
    ))


def predict_tuned(learner, model, ids: list[int], paths: list[str], progress):
    """Probabilities and the tuned network's own pooled features, in one pass."""
    rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def sink(batch_ids, features, logits):
        probs = torch.softmax(torch.tensor(logits), dim=1).numpy()
        for image_id, f, p in zip(batch_ids, features, probs):
            rows[int(image_id)] = (f, p)

    run_model(model, ids, paths, learner.config, learner.data_config(), sink, progress,
              classifier=True)
    missing = [i for i in ids if i not in rows]
    if missing:
        from .core import LearnerError

        raise LearnerError(f"{len(missing)} images could not be read for prediction")
    features = np.stack([rows[i][0] for i in ids])
    probs = np.stack([rows[i][1] for i in ids])
    return probs, features
