"""A project is a folder: `activelabel.toml` (settings), `activelabel.db`, and caches.

The settings file is read into `ProjectConfig`; everything a person produces (images,
classes, users, annotations) lives in the database, never here.
"""

from __future__ import annotations

import dataclasses
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

CONFIG_NAME = "activelabel.toml"
DB_NAME = "activelabel.db"
SECRET_NAME = ".secret_key"

# Which TOML table each setting lives in, so the file reads well for a person.
_SECTIONS = {
    "project": ("name", "images", "seed"),
    "labeling": (
        "votes_per_image", "qa_fraction", "qa_votes", "agreement_threshold", "blind",
        "lease_seconds", "strategy", "query_batch", "show_suggestion",
    ),
    "images": ("max_pixels", "display_size", "thumb_size"),
    "model": (
        "backbone", "checkpoint", "pretrained", "input_size", "training_mode", "device",
        "batch_size", "loader_workers", "retrain_every", "semi_supervised",
        "train_on_auto_labels",
    ),
    "jobs": (
        "redis_url", "time_limit_seconds", "round_time_limit_seconds",
        "clustering_time_limit_seconds", "quality_time_limit_seconds",
    ),
    "server": ("secure_cookies", "behind_proxy"),
    "export": ("export_model_labels",),
}


_TYPES = {"int": int, "str": str, "bool": bool, "float": float}


class ProjectError(Exception):
    """A project folder that is missing, malformed or cannot be created."""


@dataclass
class ProjectConfig:
    name: str
    images: str = ""  # the image folder the project was started from
    seed: int = 0  # seeds the queue's shuffle and the export split
    votes_per_image: int = 1
    qa_fraction: float = 0.1  # share of images drawn for the QA sample (agreement measured)
    qa_votes: int = 3  # votes a QA image gets, from distinct people (at most as many as label)
    agreement_threshold: float = 0.6  # an image whose votes agree less than this is disputed
    blind: bool = True  # annotators do not see each other's votes
    lease_seconds: int = 300  # how long an image handed to one annotator is kept from others
    # The query strategy rounds use unless the admin picks another: in
    # bench/label_efficiency.py diverse_margin needs about half the labels random needs, as
    # few as margin (fewer in batches of 100) and, unlike margin, beats random from the
    # first batch on.
    strategy: str = "diverse_margin"
    # Images a round chooses as one batch for the annotators before the next round; the rest
    # of the pool follows in whole-pool order. 0: retrain_every, or (rounds started by hand)
    # the strategy's own whole-pool ranking.
    query_batch: int = 0
    show_suggestion: bool = True  # show the model's guess on the card (off avoids anchoring)
    max_pixels: int = 40_000_000  # decompression-bomb limit on import
    display_size: int = 768  # longest side of the cached copy shown on the labeling page
    thumb_size: int = 160
    backbone: str = "efficientnet_lite0"  # `activelabel backbones`, or any timm model name
    checkpoint: str = ""  # a local weights file for the backbone ("" = packaged or hub weights)
    pretrained: bool = True
    # Pixels per side fed to the backbone; 0: chosen from the images at each job (their
    # typical shorter side, at least 128, at most the backbone's native size).
    input_size: int = 0
    training_mode: str = "auto"  # head | finetune | auto (finetune with CUDA, else head)
    # Spread the labels over a nearest-neighbour graph of the whole pool and blend that with
    # the model's probabilities (learner/spreading.py): fewer labels for the same accuracy
    # in bench/label_efficiency.py, most of all in the first few hundred.
    semi_supervised: bool = True
    # Train rounds on the model's auto-labels too. Off by default: a model trained on its own
    # labels grows surer of its own mistakes (confirmation bias); bench/finish.py
    # --train-on-auto-labels measures the difference. Estimates use people's labels alone.
    train_on_auto_labels: bool = False
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 64
    # processes decoding images while the network runs; 0: a thread instead; -1: by cores
    # (0 on two cores or fewer, else up to 8)
    loader_workers: int = -1
    retrain_every: int = 0  # start a round by itself after this many new labels (0 = off)
    redis_url: str = ""  # run rounds through Redis instead of the project's SQLite queue
    # A job still running this many seconds after the worker started it is stopped and
    # failed with the reason (a library call that never returns must not hold the worker);
    # the per-kind settings override it for one kind of job, 0 = this one.
    time_limit_seconds: int = 3 * 3600
    round_time_limit_seconds: int = 0
    clustering_time_limit_seconds: int = 0
    quality_time_limit_seconds: int = 0
    # Exports hold the model's auto-labels too unless asked otherwise (labels=all by
    # default); off: people's labels only, until the admin has looked at the spot checks.
    export_model_labels: bool = False
    # Served over HTTPS (directly or by a proxy): cookies get the Secure flag, so a browser
    # never sends the session over plain HTTP.
    secure_cookies: bool = False
    # Behind one reverse proxy: trust its X-Forwarded-For/-Proto/-Host (the client's address
    # for the login throttle, https for Secure cookies and the Origin check). Off, those
    # headers are ignored: anyone can send them.
    behind_proxy: bool = False

    def validate(self) -> None:
        if self.votes_per_image < 1:
            raise ProjectError("votes_per_image must be at least 1")
        if self.qa_votes < 1:
            raise ProjectError("qa_votes must be at least 1")
        if not 0.0 <= self.qa_fraction <= 1.0:
            raise ProjectError("qa_fraction must be between 0 and 1")
        if not 0.0 < self.agreement_threshold <= 1.0:
            raise ProjectError("agreement_threshold must be above 0 and at most 1")
        if self.lease_seconds < 5:
            raise ProjectError("lease_seconds must be at least 5")
        if self.max_pixels < 1:
            raise ProjectError("max_pixels must be positive")
        if self.training_mode not in ("auto", "head", "finetune"):
            raise ProjectError("training_mode must be auto, head or finetune")
        if self.input_size != 0 and not 16 <= self.input_size <= 1024:
            raise ProjectError("input_size must be 0 (from the images) or between 16 and 1024")
        if self.query_batch < 0:
            raise ProjectError("query_batch must be 0 (follow retrain_every) or positive")
        if self.batch_size < 1 or self.loader_workers < -1 or self.retrain_every < 0:
            raise ProjectError("batch_size must be positive; loader_workers >= -1 (-1: by"
                               " cores); retrain_every >= 0")
        if self.time_limit_seconds < 1:
            raise ProjectError("time_limit_seconds must be at least 1")
        for kind in ("round", "clustering", "quality"):
            if getattr(self, f"{kind}_time_limit_seconds") < 0:
                raise ProjectError(f"{kind}_time_limit_seconds must be 0 (time_limit_seconds)"
                                   " or positive")
        for key in ("display_size", "thumb_size"):
            if not 16 <= getattr(self, key) <= 4096:
                raise ProjectError(f"{key} must be between 16 and 4096")

    def time_limit(self, kind: str) -> int:
        """Seconds a job of `kind` (round, clustering, quality; an auto-label run has no
        limit of its own) may run in the worker."""
        return getattr(self, f"{kind}_time_limit_seconds", 0) or self.time_limit_seconds

    def round_batch(self) -> int | None:
        """The batch a round ranks first (strategies.rank_pool), None for none."""
        return self.query_batch or self.retrain_every or None

    def to_toml(self) -> str:
        values = dataclasses.asdict(self)
        doc = {section: {k: values[k] for k in keys} for section, keys in _SECTIONS.items()}
        return tomli_w.dumps(doc)

    @classmethod
    def from_toml(cls, text: str, source: str = CONFIG_NAME) -> ProjectConfig:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProjectError(f"{source} is not valid TOML: {exc}") from exc
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict = {}
        for section, table in doc.items():
            if not isinstance(table, dict):
                raise ProjectError(
                    f"{source}: {section!r} is not inside a section; "
                    f"sections are {', '.join(f'[{s}]' for s in _SECTIONS)}"
                )
            if section not in _SECTIONS:
                raise ProjectError(f"{source}: unknown section [{section}]")
            for key, value in table.items():
                if key not in _SECTIONS[section]:
                    raise ProjectError(f"{source}: unknown setting {section}.{key}")
                expected = _TYPES[str(known[key].type).replace("<class '", "").rstrip("'>")]
                # bool is a subclass of int: `seed = true` must not pass as a number.
                if expected is float and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)  # `qa_fraction = 0` is a fine float
                if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                    raise ProjectError(
                        f"{source}: {section}.{key} should be {expected.__name__}, got {value!r}"
                    )
                values[key] = value
        if "name" not in values:
            raise ProjectError(f"{source}: [project] name is missing")
        config = cls(**values)
        try:
            config.validate()
        except ProjectError as exc:  # say which file holds the bad value
            raise ProjectError(f"{source}: {exc}") from exc
        return config


@dataclass
class Project:
    """A project folder and the paths inside it."""

    root: Path
    config: ProjectConfig = field(repr=False)

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    def secret_key(self) -> str:
        try:
            return (self.root / SECRET_NAME).read_text().strip()
        except OSError as exc:
            raise ProjectError(
                f"cannot read the project's session key {self.root / SECRET_NAME}: "
                f"{exc.strerror or exc}"
            ) from exc

    @classmethod
    def open(cls, folder: str | Path) -> Project:
        root = Path(folder).expanduser().resolve()
        path = root / CONFIG_NAME
        if not path.is_file():
            raise ProjectError(
                f"{root} is not an activelabel project (no {CONFIG_NAME}); "
                "create one with `activelabel init`"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ProjectError(f"cannot read {path}: {exc}") from exc
        return cls(root, ProjectConfig.from_toml(text, str(path)))

    @classmethod
    def create(cls, folder: str | Path, config: ProjectConfig) -> Project:
        root = Path(folder).expanduser().resolve()
        if (root / CONFIG_NAME).exists():
            raise ProjectError(f"{root} is already an activelabel project")
        config.validate()
        try:
            root.mkdir(parents=True, exist_ok=True)
            for sub in ("cache", "exports"):
                (root / sub).mkdir(exist_ok=True)
            secret = root / SECRET_NAME
            secret.write_text(secrets.token_hex(32))
            secret.chmod(0o600)
            (root / CONFIG_NAME).write_text(config.to_toml(), encoding="utf-8")
        except OSError as exc:
            raise ProjectError(f"cannot create project in {root}: {exc}") from exc
        return cls(root, config)
