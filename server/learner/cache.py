"""Embeddings on disk: one float16 row per image id, memory-mapped, filled incrementally.

Row i holds image id i, so a lookup is an index, and adding images only grows the file.
A separate byte per row says whether the row is filled. One cache per backbone and input
size (and per fine-tuned model, which sees the images differently). Two jobs may fill one
cache at once (a round beside a quality run, each in its process): a row's value does not
depend on who computes it, and growing the files is done under a lock, never shrinking them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive lock on `path` (created if need be) held across processes: the jobs that
    share a cache folder (a round beside a quality run) take turns on what they rewrite."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def save_npz_atomically(path: Path, **arrays) -> None:
    """np.savez to `path` through a file of this process's own, then renamed over it: a
    reader in another process never sees half a file."""
    partial = path.with_name(f"{path.stem}.{os.getpid()}.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)


class EmbeddingCache:
    def __init__(self, folder: Path, dim: int):
        self.folder = Path(folder)
        self.dim = dim
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = self.folder / "meta.json"
        if meta.exists():
            stored = json.loads(meta.read_text())["dim"]
            if stored != dim:
                raise ValueError(f"{self.folder} holds {stored}-d embeddings, not {dim}-d")
        else:
            partial = self.folder / f"meta.json.{os.getpid()}"
            partial.write_text(json.dumps({"dim": dim}))
            os.replace(partial, meta)  # another process never reads it half-written
        self._vectors_path = self.folder / "vectors.f16"
        self._filled_path = self.folder / "filled.u8"
        self._open()

    @staticmethod
    def stored_dim(folder: Path) -> int | None:
        """The width of the embeddings a cache folder holds; None if it holds no cache."""
        try:
            return int(json.loads((Path(folder) / "meta.json").read_text())["dim"])
        except FileNotFoundError:
            return None

    def _capacity_on_disk(self) -> int:
        if not self._filled_path.exists():
            return 0
        return self._filled_path.stat().st_size

    def _open(self) -> None:
        capacity = self._capacity_on_disk()
        if capacity == 0:
            self.vectors = np.zeros((0, self.dim), np.float16)
            self.filled = np.zeros(0, np.uint8)
        else:
            self.vectors = np.memmap(
                self._vectors_path, np.float16, "r+", shape=(capacity, self.dim)
            )
            self.filled = np.memmap(self._filled_path, np.uint8, "r+", shape=(capacity,))

    def _grow(self, max_id: int) -> None:
        capacity = len(self.filled)
        if max_id < capacity:
            return
        new_capacity = max(max_id + 1, int(capacity * 1.5), 1024)
        self.flush()
        with self._growing():
            # Another process may have grown the files meanwhile, maybe further: never
            # shrink them. Vectors first: a filled.u8 of n rows means n rows of vectors.
            for path, size in ((self._vectors_path, new_capacity * self.dim * 2),
                               (self._filled_path, new_capacity)):
                if not path.exists() or path.stat().st_size < size:
                    # Extending a file with truncate fills it with zeros without writing them.
                    with open(path, "ab") as handle:
                        handle.truncate(size)
        self._open()

    def _growing(self):
        return file_lock(self.folder / "grow.lock")

    def missing(self, ids: np.ndarray) -> np.ndarray:
        """The ids among `ids` with no embedding yet."""
        ids = np.asarray(ids, dtype=np.int64)
        inside = ids < len(self.filled)
        done = np.zeros(len(ids), bool)
        done[inside] = self.filled[ids[inside]] == 1
        return ids[~done]

    def reserve(self, max_id: int) -> None:
        """Make room for rows up to `max_id` at once, before a pass that fills them."""
        self._grow(int(max_id))

    def put(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        self._grow(int(ids.max()))
        self.vectors[ids] = vectors.astype(np.float16)
        self.filled[ids] = 1

    def get(self, ids: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Rows for `ids` (float32, or as stored with dtype=np.float16: half the memory for
        a big pool); every id must be filled."""
        return np.asarray(self.rows(ids, dtype))

    def rows(self, ids: np.ndarray, dtype=np.float16) -> CachedRows:
        """Rows for `ids` read when indexed, not copied now: a round scores a pool of
        100,000 straight from the mapped file, a block at a time, where get() would first
        copy all of it (250 MB, a tenth of a second and more). Every id must be filled."""
        ids = np.asarray(ids, dtype=np.int64)
        missing = self.missing(ids)
        if len(missing):
            raise KeyError(f"{len(missing)} images have no embedding yet")
        return CachedRows(self.vectors, ids, np.dtype(dtype))

    def flush(self) -> None:
        for array in (self.vectors, self.filled):
            if isinstance(array, np.memmap):
                array.flush()

    def clear(self) -> None:
        self.flush()
        for path in (self._vectors_path, self._filled_path):
            if path.exists():
                os.remove(path)
        self._open()


class CachedRows:
    """Some rows of a cache, in a given order, read on indexing: `rows[i]`, `rows[a:b]` and
    `rows[positions]` return arrays, np.asarray(rows) all of them. What strategies and the
    head's scoring take for a pool's embeddings."""

    def __init__(self, vectors: np.ndarray, ids: np.ndarray, dtype: np.dtype):
        self._vectors, self.ids, self.dtype = vectors, ids, dtype

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.ids), self._vectors.shape[1])

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index) -> np.ndarray:
        return np.asarray(self._vectors[self.ids[index]], dtype=self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self._vectors[self.ids], dtype=dtype or self.dtype)
