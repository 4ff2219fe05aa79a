"""activelabel.toml: ProjectConfig round-trips through it, and every mistake in it is a
ProjectError that names the file and the setting."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from server.app import create_app
from server.cli.main import main
from server.config import CONFIG_NAME, SECRET_NAME, Project, ProjectConfig, ProjectError

CUSTOM = ProjectConfig(
    name="chiffres manuscrits ✍",
    images="/data/digits with spaces",
    seed=-12,
    votes_per_image=3,
    lease_seconds=90,
    strategy="random",
    max_pixels=1_000_000,
    display_size=512,
    thumb_size=96,
)


def test_config_round_trips_through_toml():
    for config in (CUSTOM, ProjectConfig(name="defaults")):
        assert ProjectConfig.from_toml(config.to_toml()) == config


def test_the_file_groups_settings_in_sections():
    doc = tomllib.loads(CUSTOM.to_toml())
    assert doc["project"] == {"name": CUSTOM.name, "images": CUSTOM.images, "seed": CUSTOM.seed}
    assert doc["labeling"] == {
        "votes_per_image": 3, "qa_fraction": 0.1, "qa_votes": 3, "agreement_threshold": 0.6,
        "blind": True, "lease_seconds": 90, "strategy": "random", "query_batch": 0,
            "show_suggestion": True,
    }
    assert doc["images"] == {"max_pixels": 1_000_000, "display_size": 512, "thumb_size": 96}
    # Every setting is written once, in one section: nothing is silently left out of the file.
    written = [key for table in doc.values() for key in table]
    assert sorted(written) == sorted(f.name for f in dataclasses.fields(ProjectConfig))


def test_project_folder_round_trip_and_hand_edits(tmp_path):
    created = Project.create(tmp_path / "p", CUSTOM)
    assert Project.open(tmp_path / "p").config == CUSTOM
    assert created.secret_key() == Project.open(tmp_path / "p").secret_key()
    assert len(created.secret_key()) == 64
    assert (created.root / SECRET_NAME).stat().st_mode & 0o077 == 0  # the owner's only

    # A person edits one value and leaves the rest out: the rest take their defaults.
    (tmp_path / "p" / CONFIG_NAME).write_text(
        '[project]\nname = "edited"\n\n[labeling]\nlease_seconds = 600\n', encoding="utf-8"
    )
    assert Project.open(tmp_path / "p").config == ProjectConfig(name="edited", lease_seconds=600)


def test_a_project_is_not_created_twice(tmp_path):
    Project.create(tmp_path / "p", CUSTOM)
    with pytest.raises(ProjectError, match="already an activelabel project"):
        Project.create(tmp_path / "p", ProjectConfig(name="other"))
    assert Project.open(tmp_path / "p").config == CUSTOM


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[project]\nname = "x"\ncolour = "red"\n', r"unknown setting project\.colour"),
        ('[project]\nname = "x"\n[labeling]\nseed = 3\n', r"unknown setting labeling\.seed"),
        ('[project]\nname = "x"\n[serving]\nport = 80\n', r"unknown section \[serving\]"),
        ('[project]\nname = "x"\n[server]\nport = 80\n', r"unknown setting server.port"),
        ('name = "x"\n', r"'name' is not inside a section; sections are \[project\]"),
        ('[project]\nname = "x"\nseed = "7"\n', r"project\.seed should be int, got '7'"),
        ('[project]\nname = "x"\nseed = 7.0\n', r"project\.seed should be int, got 7\.0"),
        ('[project]\nname = "x"\n[labeling]\nvotes_per_image = true\n',
         r"labeling\.votes_per_image should be int, got True"),
        ("[project]\nname = 5\n", r"project\.name should be str, got 5"),
        ('[project]\nname = "x"\n[labeling]\nstrategy = ["random"]\n',
         r"labeling\.strategy should be str, got \['random'\]"),
        ('[project]\nimages = "/data"\n', r"\[project\] name is missing"),
        ('[project\nname = "x"\n', r"is not valid TOML"),
        ('[project]\nname = "x"\n[labeling]\nvotes_per_image = 0\n',
         "votes_per_image must be at least 1"),
        ('[project]\nname = "x"\n[labeling]\nlease_seconds = 1\n',
         "lease_seconds must be at least 5"),
        ('[project]\nname = "x"\n[images]\nmax_pixels = 0\n', "max_pixels must be positive"),
        ('[project]\nname = "x"\n[images]\ndisplay_size = 8\n',
         "display_size must be between 16 and 4096"),
        ('[project]\nname = "x"\n[images]\nthumb_size = 5000\n',
         "thumb_size must be between 16 and 4096"),
        ('[project]\nname = "x"\n[model]\nloader_workers = -2\n',
         r"loader_workers >= -1 \(-1: by cores\)"),
        ('[project]\nname = "x"\n[labeling]\nquery_batch = -1\n',
         r"query_batch must be 0 \(follow retrain_every\) or positive"),
    ],
)
def test_mistakes_in_the_file_are_clear_project_errors(tmp_path, text, message):
    with pytest.raises(ProjectError, match=message):
        ProjectConfig.from_toml(text)
    # Opening a project folder with that file names the file too.
    Project.create(tmp_path / "p", ProjectConfig(name="x"))
    path = tmp_path / "p" / CONFIG_NAME
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProjectError, match=message) as raised:
        Project.open(tmp_path / "p")
    assert str(raised.value).startswith(str(path))


def test_a_file_that_is_not_utf8_is_a_project_error(tmp_path):
    Project.create(tmp_path / "p", ProjectConfig(name="x"))
    (tmp_path / "p" / CONFIG_NAME).write_bytes('[project]\nname = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ProjectError, match=f"cannot read .*{CONFIG_NAME}"):
        Project.open(tmp_path / "p")


def test_a_folder_without_the_file_is_not_a_project(tmp_path, runner):
    def message(folder) -> str:
        return rf"^{folder} is not an activelabel project \(no {CONFIG_NAME}\); create one with"

    with pytest.raises(ProjectError, match=message(tmp_path)):
        Project.open(tmp_path)
    with pytest.raises(ProjectError, match=message(tmp_path / "does-not-exist")):
        Project.open(tmp_path / "does-not-exist")
    with pytest.raises(ProjectError, match=message(tmp_path)):
        create_app(tmp_path, {"TESTING": True})
    result = runner.invoke(main, ["user", "list", str(tmp_path)])
    assert result.exit_code == 1
    assert "is not an activelabel project" in result.stderr


def test_a_lost_session_key_is_a_project_error(tmp_path):
    Project.create(tmp_path / "p", ProjectConfig(name="x"))
    (tmp_path / "p" / SECRET_NAME).unlink()
    with pytest.raises(ProjectError, match="cannot read the project's session key"):
        create_app(tmp_path / "p", {"TESTING": True})


def test_settings_in_the_file_reach_the_app(project):
    text = (project.root / CONFIG_NAME).read_text(encoding="utf-8")
    (project.root / CONFIG_NAME).write_text(
        text.replace("thumb_size = 160", "thumb_size = 48"), encoding="utf-8"
    )
    app = create_app(project.root, {"TESTING": True})
    assert app.extensions["activelabel"].config.thumb_size == 48
    assert app.extensions["activelabel"].config.seed == 7  # the conftest project's seed


def test_a_rounds_batch_is_query_batch_else_retrain_every_else_none():
    assert ProjectConfig(name="x").round_batch() is None  # rounds by hand: whole-pool order
    assert ProjectConfig(name="x", retrain_every=20).round_batch() == 20
    assert ProjectConfig(name="x", retrain_every=20, query_batch=50).round_batch() == 50
