"""Shared fixtures: real digit images on disk, a real project folder (SQLite file), the real
Flask app and client, and logged-in users."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits

from server.app import create_app
from server.dataset.demo import digit_image
from server.projects import add_user, init_project

CLASSES = [str(d) for d in range(10)]
PASSWORDS = {"admin": "admin-password", "ann": "ann-password", "bob": "bob-password"}


@pytest.fixture(scope="session")
def digits():
    return load_digits()


def write_digits(folder: Path, digits, count: int, start: int = 0, per_class: bool = False) -> dict:
    """Write `count` real digit images as PNGs; returns {path: true label}. With per_class,
    images go to folder/<label>/ (the folder-per-class layout)."""
    truth = {}
    for index in range(start, start + count):
        label = str(int(digits.target[index]))
        target = folder / label if per_class else folder
        target.mkdir(parents=True, exist_ok=True)
        path = target / f"digit-{index:04d}.png"
        digit_image(digits.images[index]).save(path)
        truth[str(path)] = label
    return truth


@pytest.fixture
def image_folder(tmp_path, digits) -> Path:
    """40 unlabeled real digit images."""
    folder = tmp_path / "images"
    write_digits(folder, digits, 40)
    return folder


@pytest.fixture
def project(tmp_path, image_folder):
    """A single-vote project (no QA sample: every image needs exactly one vote); the
    consensus tests build their own with overlap."""
    created, _report = init_project(
        tmp_path / "project", image_folder, CLASSES, seed=7, qa_fraction=0.0
    )
    for name, role in (("admin", "admin"), ("ann", "annotator"), ("bob", "annotator")):
        add_user(created, name, role, PASSWORDS[name])
    return created


@pytest.fixture
def app(project):
    return create_app(project.root, {"TESTING": True})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner():
    return CliRunner()


def csrf_token(client, path: str = "/login") -> str:
    page = client.get(path)
    match = re.search(r'name="csrf-token" content="([^"]+)"', page.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def login(client, name: str, password: str | None = None) -> str:
    """Log in through the real form; returns a CSRF token for later posts."""
    token = csrf_token(client)
    response = client.post(
        "/login",
        data={"name": name, "password": password or PASSWORDS[name], "csrf_token": token},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    return csrf_token(client, "/label")


def htmx_headers(token: str) -> dict:
    return {"X-CSRFToken": token, "HX-Request": "true"}


def card_images(html: str) -> list[int]:
    """Image ids on a labeling card: the current one first, then the prefetched one."""
    return [int(i) for i in re.findall(r'src="/images/(\d+)', html)]


@pytest.fixture
def as_user(app):
    """as_user('ann') -> (client, csrf token), logged in."""

    def make(name: str):
        client = app.test_client()
        token = login(client, name)
        return client, token

    return make
