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
    "labeling": ("votes_per_image", "lease_seconds", "strategy"),
    "images": ("max_pixels", "display_size", "thumb_size"),
}


class ProjectError(Exception):
    """A project folder that is missing, malformed or cannot be created."""


@dataclass
class ProjectConfig:
    name: str
    images: str = ""  # the image folder the project was started from
    seed: int = 0  # seeds the queue's shuffle and the export split
    votes_per_image: int = 1
    lease_seconds: int = 300  # how long an image handed to one annotator is kept from others
    strategy: str = "random"
    max_pixels: int = 40_000_000  # decompression-bomb limit on import
    display_size: int = 768  # longest side of the cached copy shown on the labeling page
    thumb_size: int = 160

    def validate(self) -> None:
        if self.votes_per_image < 1:
            raise ProjectError("votes_per_image must be at least 1")
        if self.lease_seconds < 5:
            raise ProjectError("lease_seconds must be at least 5")
        if self.max_pixels < 1:
            raise ProjectError("max_pixels must be positive")
        for key in ("display_size", "thumb_size"):
            if not 16 <= getattr(self, key) <= 4096:
                raise ProjectError(f"{key} must be between 16 and 4096")

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
            if section not in _SECTIONS or not isinstance(table, dict):
                raise ProjectError(f"{source}: unknown section [{section}]")
            for key, value in table.items():
                if key not in _SECTIONS[section]:
                    raise ProjectError(f"{source}: unknown setting {section}.{key}")
                expected = int if known[key].type in ("int",) else str
                if not isinstance(value, expected) or isinstance(value, bool):
                    raise ProjectError(
                        f"{source}: {section}.{key} should be {expected.__name__}, got {value!r}"
                    )
                values[key] = value
        if "name" not in values:
            raise ProjectError(f"{source}: [project] name is missing")
        config = cls(**values)
        config.validate()
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
        return (self.root / SECRET_NAME).read_text().strip()

    @classmethod
    def open(cls, folder: str | Path) -> Project:
        root = Path(folder).expanduser().resolve()
        path = root / CONFIG_NAME
        if not path.is_file():
            raise ProjectError(
                f"{root} is not an activelabel project (no {CONFIG_NAME}); "
                "create one with `activelabel init`"
            )
        return cls(root, ProjectConfig.from_toml(path.read_text(encoding="utf-8"), str(path)))

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
