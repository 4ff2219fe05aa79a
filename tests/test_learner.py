"""The learner on real digit images and real timm networks, on the CPU: backbones and their
weights (packaged, local checkpoint, hub), the embedding cache, the head and the fine-tune."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import write_digits
from sklearn.linear_model import LogisticRegression

from server.learner import Learner, LearnerConfig, LearnerError
from server.learner.backbone import (
    BackboneError,
    _packaged_lite0_weights,
    create_backbone,
    map_by_position,
)
from server.learner.cache import EmbeddingCache
from server.learner.catalog import MIN_INPUT_SIZE, PACKAGED, architecture, choose_input_size
from server.learner.finetune import balanced_weights
from server.learner.head import SAMPLES_PER_COMPONENT, HeadModel, Projection, cross_validate

TINY = "test_efficientnet"  # a real timm architecture, small enough to train in a test
SIZE = 32


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory, digits):
    """48 real digit PNGs: (ids, paths, labels); ids start at 1 like database rows."""
    truth = write_digits(tmp_path_factory.mktemp("digits"), digits, 48)
    paths = list(truth)
    return list(range(1, len(paths) + 1)), paths, np.array([int(truth[p]) for p in paths])


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def lite0(cache_root: Path, **settings) -> Learner:
    """The default backbone with its packaged ImageNet weights, small and in-process."""
    config = {"input_size": SIZE, "workers": 0, "batch_size": 16, **settings}
    return Learner(LearnerConfig(**config), cache_root)


class Progress:
    """Collects a learner's progress reports."""

    def __init__(self):
        self.reports: list[tuple[float, str]] = []

    def __call__(self, fraction: float, message: str) -> None:
        self.reports.append((fraction, message))

    @property
    def last(self) -> str:
        return self.reports[-1][1]


# -- backbones and weights ---------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_packaged_weights_map_onto_the_tf_padded_timm_model(name):
    entry = PACKAGED[name]
    source = entry.weights()
    model = timm.create_model(entry.architecture, pretrained=False)
    mapped = map_by_position(model, source)
    assert list(mapped) == list(model.state_dict())
    for (_, theirs), ours in zip(source.items(), mapped.values()):
        assert ours is theirs
    # create_backbone loads them: its first weight is the package's first weight.
    backbone = create_backbone(name)
    first = next(iter(source.values()))
    assert torch.equal(backbone.state_dict()["conv_stem.weight"], first)
    assert backbone.num_classes == 0 and backbone.num_features == 1280
    assert backbone.pretrained_cfg["architecture"] == entry.architecture


def imagenet_top1(model: torch.nn.Module) -> list[str]:
    """The ImageNet class a 1000-class model gives each of scikit-learn's two sample photos
    (a Chinese temple, a flower), as timm's data config for that model prepares them."""
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({}, model=model))
    info = ImageNetInfo()
    with torch.no_grad():
        batch = torch.stack([transform(Image.fromarray(photo))
                             for photo in load_sample_images().images])
        top = model.eval()(batch).argmax(dim=1)
    return [info.index_to_description(int(i)).split(",")[0] for i in top]


def test_packaged_lite0_sees_the_sample_photos_as_imagenet_does():
    # Built with the padding its weights were trained with (TF "SAME"), Lite0 calls the photos
    # a palace and a daisy; the same weights in timm's symmetric-padding efficientnet_lite0
    # call the flower a lampshade (and lose ~3 points of linear probe on Fashion-MNIST).
    assert imagenet_top1(create_backbone(num_classes=1000)) == ["palace", "daisy"]
    symmetric = timm.create_model("efficientnet_lite0", pretrained=False)
    symmetric.load_state_dict(map_by_position(symmetric, _packaged_lite0_weights()))
    assert imagenet_top1(symmetric)[1] != "daisy"


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_packaged_backbones_see_the_temple_as_a_palace(name):
    assert imagenet_top1(create_backbone(name, num_classes=1000))[0] == "palace"


def test_input_size_follows_the_images_within_the_backbones_range():
    assert choose_input_size(8, "efficientnet_lite0")[0] == MIN_INPUT_SIZE
    assert choose_input_size(28, "efficientnet_lite0")[0] == MIN_INPUT_SIZE
    assert choose_input_size(150, "efficientnet_lite0")[0] == 160
    assert choose_input_size(100, "efficientnet_lite0")[0] == MIN_INPUT_SIZE == 128
    size, why = choose_input_size(480, "efficientnet_lite0")
    assert size == 224 and "capped at efficientnet_lite0's native 224" in why
    assert choose_input_size(480, "efficientnet_lite2")[0] == 260
    assert choose_input_size(None, "efficientnet_lite0")[0] == MIN_INPUT_SIZE
    assert architecture("efficientnet_lite0") == "tf_efficientnet_lite0"
    # A user's own checkpoint was trained in the timm model its name says.
    assert architecture("efficientnet_lite0", checkpoint="mine.pth") == "efficientnet_lite0"


def test_map_by_position_names_a_wrong_shape():
    model = timm.create_model(TINY, pretrained=False)
    state = dict(model.state_dict())
    name = list(state)[4]
    state[name] = torch.zeros(3, 3)
    with pytest.raises(BackboneError, match=rf"weight {name} \(entry 4 of .*\) has shape \(3, 3\)"):
        map_by_position(model, state)


def test_map_by_position_names_a_missing_or_surplus_entry():
    model = timm.create_model(TINY, pretrained=False)
    state = dict(model.state_dict())
    last = list(state)[-1]
    fewer = {k: v for k, v in state.items() if k != last}
    with pytest.raises(BackboneError, match=rf"{len(state) - 1} entries.*{last} in the model"):
        map_by_position(model, fewer)
    more = {**state, "extra.weight": torch.zeros(2)}
    with pytest.raises(BackboneError, match=r"extra\.weight in the weights"):
        map_by_position(model, more)


def test_local_checkpoint_for_another_timm_model(tmp_path, digit_files):
    torch.manual_seed(1)
    source = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "resnet10t-mine.pth"
    torch.save(source.state_dict(), path)
    model = create_backbone("resnet10t", checkpoint=str(path))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, source.state_dict()[name]), name
    assert model.num_classes == 0

    # Training scripts wrap the weights, and may have trained another number of classes.
    tuned = timm.create_model("resnet10t", pretrained=False, num_classes=10)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": tuned.state_dict(), "epoch": 3}, wrapped)
    assert torch.equal(create_backbone("resnet10t", checkpoint=str(wrapped)).conv1[0].weight,
                       tuned.conv1[0].weight)

    # ...and through the learner, which names its cache after the checkpoint.
    ids, paths, _ = digit_files
    learner = Learner(LearnerConfig(backbone="resnet10t", checkpoint=str(path), input_size=SIZE,
                                    workers=0), tmp_path / "cache")
    assert learner.embed(ids[:4], paths[:4]) == []
    assert learner.embeddings(ids[:4]).shape == (4, 512)
    [folder] = (tmp_path / "cache" / "embeddings").iterdir()
    assert folder.name.startswith("resnet10t-32-resnet10t-mine-")


def test_checkpoint_problems_are_clear(tmp_path):
    other = tmp_path / "other.pth"
    torch.save(timm.create_model(TINY, pretrained=False).state_dict(), other)
    with pytest.raises(BackboneError, match="does not fit resnet10t"):
        create_backbone("resnet10t", checkpoint=str(other))
    with pytest.raises(BackboneError, match="does not exist"):
        create_backbone("resnet10t", checkpoint=str(tmp_path / "missing.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(BackboneError, match="cannot read checkpoint"):
        create_backbone("resnet10t", checkpoint=str(garbage))


def test_unknown_model_name():
    with pytest.raises(BackboneError, match="unknown timm model 'resnet_9000'"):
        create_backbone("resnet_9000")
    learner = Learner(LearnerConfig(backbone="resnet_9000"), Path("unused"))
    with pytest.raises(LearnerError, match="unknown timm model"):
        learner.embed([1], ["x.png"])


def test_unreachable_hub_weights_point_to_the_checkpoint_setting(tmp_path):
    # A process with the hub switched off and empty caches: what a machine without network
    # sees (switched off, it fails at once instead of retrying for a minute).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "TORCH_HOME": str(tmp_path / "torch")}
    code = textwrap.dedent("""
        from server.learner.backbone import BackboneError, create_backbone
        try:
            create_backbone("resnet10t")
        except BackboneError as exc:
            print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    assert "cannot fetch weights for 'resnet10t'" in result.stdout, result.stderr
    assert "`checkpoint` in activelabel.toml" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback without CUDA")
def test_without_cuda_the_learner_falls_back_to_cpu_and_head():
    assert LearnerConfig(device="cuda", mode="auto").resolved_device() == "cpu"
    assert LearnerConfig(device="cuda", mode="auto").resolved_mode() == "head"
    assert LearnerConfig().resolved_mode() == "head"
    assert LearnerConfig(mode="finetune").resolved_mode() == "finetune"
    with pytest.raises(LearnerError, match="unknown training mode 'fast'"):
        LearnerConfig(mode="fast").resolved_mode()


# -- the embedding cache -------------------------------------------------------------------

def test_embeddings_are_computed_once_and_incrementally(cache_root, digit_files):
    ids, paths, _ = digit_files
    first = Progress()
    assert lite0(cache_root).embed(ids[:20], paths[:20], first) == []
    assert first.last == "embedded 20 of 20 images"
    before = lite0(cache_root).embeddings(ids[:20])

    # Images arrive: only the new ones are computed; the old rows do not move.
    more = Progress()
    learner = lite0(cache_root)
    learner.embed(ids[:30], paths[:30], more)
    assert more.last == "embedded 10 of 10 images"
    np.testing.assert_array_equal(learner.embeddings(ids[:20]), before)

    # The cache survives reopening: nothing is computed again.
    again = Progress()
    reopened = lite0(cache_root)
    reopened.embed(ids[:30], paths[:30], again)
    assert again.reports == [(1.0, "all embeddings cached")]
    assert reopened.embeddings(ids[:30]).shape == (30, 1280)


def test_embeddings_are_stable_and_per_input_size(cache_root, tmp_path, digit_files):
    ids, paths, _ = digit_files
    cached = lite0(cache_root)
    cached.embed(ids[:30], paths[:30])
    fresh = lite0(tmp_path)
    fresh.embed(ids[:10], paths[:10])
    # Recomputed from scratch, the same image gives the same vector (float16 storage).
    np.testing.assert_allclose(fresh.embeddings(ids[:10]), cached.embeddings(ids[:10]),
                               atol=2e-2, rtol=1e-2)

    larger = Progress()
    other = lite0(cache_root, input_size=48)
    other.embed(ids[:10], paths[:10], larger)
    assert larger.last == "embedded 10 of 10 images"  # its own cache: all computed
    folders = sorted(p.name for p in (cache_root / "embeddings").iterdir())
    # Named by the architecture that makes the features: a cache of the symmetric-padding
    # efficientnet_lite0 (before the weights were built as tf_) is never reused.
    assert folders == ["tf_efficientnet_lite0-32", "tf_efficientnet_lite0-48"]
    assert not np.allclose(other.embeddings(ids[:10]), cached.embeddings(ids[:10]), atol=1e-2)


def test_a_reading_thread_and_worker_processes_give_the_same_embeddings(tmp_path, digit_files):
    # workers=0: a background thread decodes; workers=1: a spawned DataLoader process. The
    # batch-wise normalisation matches torchvision's ToTensor + Normalize per image.
    from torchvision import transforms

    from server.dataset.imaging import load_rgb

    ids, paths, _ = digit_files
    threaded, process = lite0(tmp_path / "a"), lite0(tmp_path / "b", workers=1)
    threaded.embed(ids[:12], paths[:12])
    process.embed(ids[:12], paths[:12])
    np.testing.assert_array_equal(threaded.embeddings(ids[:12]), process.embeddings(ids[:12]))
    config = threaded.data_config()
    per_image = transforms.Compose([
        transforms.Resize(SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(SIZE), transforms.ToTensor(),
        transforms.Normalize(config["mean"], config["std"]),
    ])
    batch = torch.stack([per_image(load_rgb(p, 10**8)[0]) for p in paths[:12]])
    with torch.inference_mode():
        model = threaded.backbone().eval()
        expected = model.forward_head(model.forward_features(batch), pre_logits=True)
    np.testing.assert_allclose(threaded.embeddings(ids[:12]), expected.numpy(),
                               atol=2e-2, rtol=1e-2)  # float16 storage


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("shape", [(8, 8), (7, 12), (21, 6), (47, 32), (64, 64), (100, 70)])
def test_the_eval_transform_is_torchvisions_pixel_for_pixel(digits, mode, shape):
    # Real digits (gray, and tinted to colour), stretched to shapes that need a resize up or
    # down and a crop or none: the same uint8 pixels as Resize(BICUBIC) + CenterCrop +
    # PILToTensor on the RGB image, where gray images are resized as one channel.
    from PIL import Image
    from torchvision import transforms

    from server.learner.data import eval_transform

    reference = transforms.Compose([
        transforms.Resize(SIZE, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(SIZE), transforms.PILToTensor(),
    ])
    for index in range(5):
        gray = (digits.images[index] * 255 / 16).astype(np.uint8)
        image = Image.fromarray(gray).resize(shape, Image.Resampling.BILINEAR)
        if mode == "RGB":
            image = Image.merge("RGB", [image, image.point(lambda v: v // 2),
                                        image.point(lambda v: 255 - v)])
        ours = eval_transform(SIZE)(image)
        assert ours.shape == (3, SIZE, SIZE) and ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, reference(image.convert("RGB")).numpy())


def test_read_ahead_passes_errors_on_and_stops_when_left():
    from server.learner.data import default_workers, read_ahead

    def items():
        yield from range(3)
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in read_ahead(items(), ahead=2):
            got.append(item)
    assert got == [0, 1, 2]

    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    reader = read_ahead(endless(), ahead=2)
    assert [next(reader) for _ in range(5)] == [0, 1, 2, 3, 4]
    reader.close()  # the consumer leaves: the thread stops instead of reading on
    time.sleep(0.5)
    stopped_at = len(produced)
    time.sleep(0.3)
    assert len(produced) == stopped_at <= 5 + 2 + 2
    assert default_workers(2) == 0 and default_workers(1) == 0
    assert default_workers(4) == 3 and default_workers(64) == 8


def test_unreadable_files_are_reported_and_not_cached(tmp_path, digit_files):
    ids, paths, _ = digit_files
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(Path(paths[0]).read_bytes()[:60])  # a truncated PNG
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    learner = lite0(tmp_path / "cache")
    batch_ids = [1, 2, 3, 4]
    failed = learner.embed(batch_ids, [paths[1], str(damaged), paths[2], str(empty)])
    assert sorted(failed) == [2, 4]
    assert learner.cache().missing(np.array(batch_ids)).tolist() == [2, 4]
    assert learner.embeddings([1, 3]).shape == (2, 1280)
    with pytest.raises(LearnerError, match="1 images have no embedding yet"):
        learner.embeddings([2])
    # A later round tries them again (the file may have been fixed meanwhile).
    assert sorted(learner.embed(batch_ids, [paths[1], str(damaged), paths[2], paths[3]])) == [2]


def test_embedding_cache_grows_and_reopens(tmp_path):
    cache = EmbeddingCache(tmp_path, dim=4)
    rows = np.arange(8, dtype=np.float32).reshape(2, 4)
    cache.put(np.array([3, 2500]), rows)  # far past the first allocation
    cache.flush()
    reopened = EmbeddingCache(tmp_path, dim=4)
    np.testing.assert_array_equal(reopened.get(np.array([2500, 3])), rows[::-1])
    assert reopened.missing(np.array([1, 3, 2500, 9999])).tolist() == [1, 9999]
    with pytest.raises(ValueError, match="holds 4-d embeddings, not 8-d"):
        EmbeddingCache(tmp_path, dim=8)


def test_cached_rows_read_on_indexing_are_the_rows_get_copies(tmp_path):
    cache = EmbeddingCache(tmp_path, dim=3)
    cache.put(np.arange(1, 11), np.arange(30, dtype=np.float32).reshape(10, 3))
    ids = np.array([7, 2, 9, 4])
    rows = cache.rows(ids)
    assert len(rows) == 4 and rows.shape == (4, 3)
    np.testing.assert_array_equal(np.asarray(rows), cache.get(ids, np.float16))
    np.testing.assert_array_equal(rows[1:3], cache.get(ids[1:3], np.float16))
    np.testing.assert_array_equal(rows[np.array([3, 0])], cache.get(ids[[3, 0]], np.float16))
    with pytest.raises(KeyError, match="1 images have no embedding"):
        cache.rows(np.array([2, 11]))


def test_the_head_scores_a_pool_from_the_cache_as_from_an_array(tmp_path):
    """Many score blocks, dealt to threads, read from the mapped file: the probabilities
    are sklearn's on the projected features (real digits, pixels as features)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.tile(digits.data, (3, 1))[:5000].astype(np.float16)  # > two blocks of 2,048
    y = np.tile(digits.target, 3)[:5000]
    cache = EmbeddingCache(tmp_path, dim=x.shape[1])
    cache.put(np.arange(1, len(x) + 1), x)
    head = HeadModel.fit(x[:600].astype(np.float32), y[:600])
    ids = np.random.default_rng(0).permutation(np.arange(1, len(x) + 1))
    from_cache = head.predict_proba(cache.rows(ids))
    expected = head.classifier.predict_proba(head.projection(x[ids - 1].astype(np.float32)))
    np.testing.assert_allclose(from_cache, expected, atol=1e-5)
    np.testing.assert_allclose(head.predict_proba(x[ids - 1]), from_cache, atol=1e-6)


# -- fitting: the head ----------------------------------------------------------------------

def test_head_gives_probabilities_over_the_labeled_classes_only(cache_root, digit_files):
    ids, paths, labels = digit_files
    learner = lite0(cache_root)
    learner.embed(ids, paths)
    # Only digits 3, 7 and 9 have labels so far: three columns, in class order.
    chosen = [i for i in range(len(ids)) if labels[i] in (3, 7, 9)]
    rest = [i for i in range(len(ids)) if i not in chosen]
    fitted = learner.fit([ids[i] for i in chosen], [paths[i] for i in chosen], labels[chosen],
                         pool_ids=[ids[i] for i in rest])
    assert fitted.mode == "head"
    assert fitted.class_ids == [3, 7, 9]
    assert fitted.labels_used == len(chosen)
    assert set(fitted.per_class_accuracy) <= {3, 7, 9}
    assert 0.0 <= fitted.cv_accuracy <= 1.0
    probs, embeddings = learner.predict_proba(fitted, [ids[i] for i in rest],
                                              [paths[i] for i in rest])
    assert probs.shape == (len(rest), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert embeddings.shape == (len(rest), 1280)


@pytest.mark.parametrize(("labels", "why"), [
    ([4, 4, 4], r"only one class has labels \(3 labels\)"),
    ([], "there are no labels"),
])
def test_fewer_than_two_classes_is_explained(cache_root, digit_files, labels, why):
    ids, paths, _ = digit_files
    learner = lite0(cache_root)
    learner.embed(ids[:3], paths[:3])
    with pytest.raises(LearnerError, match=f"at least two classes; so far {why}"):
        learner.fit(ids[: len(labels)], paths[: len(labels)], labels)


def test_cross_validation_leaves_out_classes_with_one_label():
    rng = np.random.default_rng(0)
    y = np.array([0] * 6 + [1] * 6 + [2])
    x = rng.normal(size=(len(y), 5)) + y[:, None] * 3.0
    accuracy, per_class = cross_validate(x, y)
    assert set(per_class) == {0, 1}
    assert accuracy == pytest.approx(1.0)
    assert cross_validate(x[5:], y[5:]) == (None, {})  # one usable class left


def test_head_learns_a_small_project_from_two_labels_a_class():
    # 40 images in 4 well-separated classes, 2 labels in each.
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    x = rng.normal(size=(4, 64))[y] + rng.normal(size=(40, 64))
    labeled = np.concatenate([np.flatnonzero(y == c)[:2] for c in range(4)])
    rest = np.setdiff1d(np.arange(40), labeled)
    head = HeadModel.fit(x[labeled], y[labeled], unlabeled=x[rest])
    assert np.mean(head.predict(x[rest]) == y[rest]) >= 0.9


def test_projection_keeps_few_components_on_few_images():
    # Whitening as many PCA directions as there are images makes every pair of images
    # equally far apart: a head on that projection can only guess.
    x = np.random.default_rng(0).normal(size=(40, 64))
    assert Projection.fit(x, components=128).pca.n_components_ == 40 // SAMPLES_PER_COMPONENT
    assert Projection.fit(x[:7], components=128).pca is None  # too few for any


def test_head_does_not_drown_a_rare_class():
    rng = np.random.default_rng(0)

    def blob(n: int, shift: float) -> np.ndarray:
        return rng.normal(size=(n, 10)) + shift

    x, y = np.vstack([blob(190, 0), blob(10, 0.8)]), np.r_[np.zeros(190, int), np.ones(10, int)]
    rare_test = blob(200, 0.8)
    recall = np.mean(HeadModel.fit(x, y).predict(rare_test) == 1)
    unweighted = np.mean(LogisticRegression(C=0.5, max_iter=1000).fit(x, y).predict(rare_test))
    assert recall >= 0.75 > unweighted + 0.2


def test_balanced_weights():
    weights = balanced_weights(np.array([0] * 18 + [1] * 2), classes=3)
    np.testing.assert_allclose(weights, [20 / 54, 20 / 6, 20 / 3])  # class 2: as if 1 label
    assert weights.dtype == np.float32


# -- fitting: the fine-tune -------------------------------------------------------------------

def test_finetune_on_cpu_with_a_tiny_network(tmp_path, digit_files):
    ids, paths, labels = digit_files
    # Imbalanced: six 0s, four 1s, two 2s; and one training file unreadable.
    chosen = [np.flatnonzero(labels == c)[:n] for c, n in ((0, 6), (1, 4), (2, 2))]
    chosen = np.concatenate(chosen)
    train_ids, train_paths = [ids[i] for i in chosen], [paths[i] for i in chosen]
    pool = [i for i in range(len(ids)) if i not in chosen][:10]
    pool_ids, pool_paths = [ids[i] for i in pool], [paths[i] for i in pool]
    learner = Learner(LearnerConfig(backbone=TINY, pretrained=False, input_size=SIZE, epochs=2,
                                    mode="finetune", workers=0, batch_size=4), tmp_path)
    assert learner.embed(train_ids + pool_ids, train_paths + pool_paths) == []
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    train_paths[1] = str(damaged)
    progress = Progress()
    fitted = learner.fit(train_ids, train_paths, labels[chosen], progress, pool_ids=pool_ids)
    assert fitted.mode == "finetune"
    assert fitted.class_ids == [0, 1, 2]
    fractions = [f for f, _ in progress.reports]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert progress.last == "fine-tuning: epoch 2 of 2"
    assert len(progress.reports) > 2  # per batch, not per epoch

    probs, embeddings = learner.predict_proba(fitted, pool_ids, pool_paths)
    assert probs.shape == (10, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # The strategies see the tuned network's features, not the frozen backbone's.
    assert embeddings.shape == (10, fitted.model.num_features)
    assert not np.allclose(embeddings, learner.embeddings(pool_ids), atol=1e-2)
