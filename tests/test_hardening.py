"""The smaller holes of the trust review, each through the real thing: project files only
the owner can read, ids past SQLite's integers, the Secure cookie flag and the proxy
setting, one decode of a large image however many requests ask at once, and the agreement
report kept until an answer changes it."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import threading

from conftest import PASSWORDS, card_images, csrf_token, htmx_headers, login
from PIL import Image
from sklearn.datasets import load_sample_images

from server.app import create_app
from server.config import CONFIG_NAME, Project
from server.dataset import imaging
from server.projects import add_user, init_project, open_db


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def configure(project: Project, **settings) -> Project:
    config = dataclasses.replace(project.config, **settings)
    (project.root / CONFIG_NAME).write_text(config.to_toml(), encoding="utf-8")
    return Project.open(project.root)


def test_every_file_the_cli_writes_is_the_owners_alone(tmp_path, image_folder):
    """Under umask 022, as on most machines: the databases hold password hashes."""
    env = {**os.environ}
    command = [sys.executable, "-c", "import os, sys; os.umask(0o022);"
               " from server.cli.main import main; sys.argv[0] = 'activelabel'; main()"]
    project = tmp_path / "p"
    for args in (["init", project, "--images", image_folder, "--classes", "a,b"],
                 ["user", "add", project, "ann", "--password", "ann-password"]):
        done = subprocess.run([*command, *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == 0, done.stderr
    assert mode(project) == 0o700
    for name in ("activelabel.db", "activelabel.toml", ".secret_key"):
        assert mode(project / name) == 0o600, name
    for name in ("cache", "exports"):
        assert mode(project / name) == 0o700, name


def test_an_older_projects_readable_files_are_closed_when_it_is_opened(project):
    for path in (project.root, project.db_path, project.root / CONFIG_NAME):
        path.chmod(0o755 if path.is_dir() else 0o644)
    open_db(project).conn.close()
    assert mode(project.root) == 0o700
    assert mode(project.db_path) == 0o600 and mode(project.root / CONFIG_NAME) == 0o600


def test_ids_past_sqlites_integers_are_404_on_every_route(app):
    client = app.test_client()
    login(client, "admin")
    huge = str(2**63)
    checked = 0
    for rule in app.url_map.iter_rules():
        if "int" not in str(rule) or "GET" not in rule.methods:
            continue
        url = str(rule)
        for argument in rule.arguments:
            url = url.replace(f"<int:{argument}>", huge)
        response = client.get(url)
        assert response.status_code == 404, (url, response.status_code)
        checked += 1
    assert checked >= 3
    assert client.get("/admin/imports/9223372036854775807").status_code == 404  # the largest


def test_secure_cookies_set_the_secure_flag(project):
    plain = create_app(project.root, {"TESTING": True}).test_client()
    plain.get("/login")
    assert not plain.get_cookie("session").secure
    secure = configure(project, secure_cookies=True)
    client = create_app(secure.root, {"TESTING": True}).test_client()
    client.get("/login", base_url="https://localhost")
    assert client.get_cookie("session", domain="localhost").secure


def _fail_login(client, address: str, forwarded: str):
    token = csrf_token(client)
    return client.post("/login", data={"name": "ann", "password": "not-it-1234",
                                       "csrf_token": token},
                       environ_base={"REMOTE_ADDR": address},
                       headers={"X-Forwarded-For": forwarded})


def test_x_forwarded_for_counts_only_behind_a_proxy(project):
    """Without behind_proxy anyone could send X-Forwarded-For to dodge the address count;
    with it, the proxy's header names the client, so one client's guesses lock only it."""
    client = create_app(project.root, {"TESTING": True}).test_client()
    for attempt in range(10):
        _fail_login(client, "10.0.0.1", f"192.0.2.{attempt}")
    assert _fail_login(client, "10.0.0.1", "192.0.2.99").status_code == 429

    proxied = configure(project, behind_proxy=True)
    client = create_app(proxied.root, {"TESTING": True}).test_client()
    for _ in range(10):
        _fail_login(client, "10.0.0.1", "192.0.2.1")
    assert _fail_login(client, "10.0.0.1", "192.0.2.1").status_code == 429
    token = csrf_token(client)
    other = client.post("/login", data={"name": "ann", "password": PASSWORDS["ann"],
                                        "csrf_token": token},
                        environ_base={"REMOTE_ADDR": "10.0.0.1"},
                        headers={"X-Forwarded-For": "192.0.2.2"})
    assert other.status_code == 302


def test_parallel_requests_for_one_large_uncached_image_decode_it_once(tmp_path):
    """A 25-megapixel photo (scikit-learn's sample, enlarged): the card and three more
    requests at the same moment; one render, four good answers."""
    folder = tmp_path / "photos"
    folder.mkdir()
    china = Image.fromarray(load_sample_images().images[0]).resize((5000, 5000))
    china.save(folder / "china.png")
    project, _ = init_project(tmp_path / "p", folder, ["a", "b"], qa_fraction=0.0)
    add_user(project, "ann", "annotator", PASSWORDS["ann"])
    app = create_app(project.root, {"TESTING": True})
    client = app.test_client()
    token = login(client, "ann")
    image_id = card_images(client.get("/label", headers=htmx_headers(token))
                           .get_data(as_text=True))[0]
    before = imaging.renders
    start = threading.Barrier(4)
    results = []

    def fetch():
        start.wait()
        with client.get(f"/images/{image_id}") as response:
            results.append((response.status_code, len(response.data)))

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [s for s, _ in results] == [200] * 4
    assert len({n for _, n in results}) == 1 and results[0][1] > 1000
    assert imaging.renders - before == 1


def test_the_agreement_report_is_kept_until_an_answer_changes_it(app):
    admin = app.test_client()
    login(admin, "admin")
    ann = app.test_client()
    token = login(ann, "ann")
    admin.get("/admin/agreement/")
    admin.get("/admin/agreement/confusion.png")
    admin.get("/admin/agreement/")
    cache = app.extensions["agreement_cache"]
    assert cache.computed == 1
    image = card_images(ann.get("/label", headers=htmx_headers(token)).get_data(as_text=True))[0]
    ann.post(f"/label/{image}", data={"choice": "1"}, headers=htmx_headers(token))
    admin.get("/admin/agreement/")
    assert cache.computed == 2
