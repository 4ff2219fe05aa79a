"""`activelabel simulate --mode grid|cluster`: the simulated annotator labels through the grids
of the running product (real server and worker as subprocesses, over HTTP) and its actions
are counted; and what the action count means, on its own."""

from __future__ import annotations

import csv
import sqlite3

import pytest

from server.cli.main import main
from server.dataset.demo import write_digits
from server.projects import init_project
from server.simulation import plan as planning
from server.simulation.annotators import (
    ActionTally,
    judge_cluster_page,
    judge_verify_page,
    keyboard_actions,
    page_actions,
)

CLASSES = [str(d) for d in range(10)]


@pytest.fixture(scope="module")
def digits_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("simbulk")
    oracle = root / "oracle.csv"
    write_digits(root / "images", oracle, limit=150)
    project, _ = init_project(root / "digits", root / "images", CLASSES, seed=3)
    with oracle.open(newline="") as handle:
        truth = {row["file"]: row["label"] for row in csv.DictReader(handle)}
    return project, oracle, truth


def test_grid_and_cluster_modes_label_through_the_product_and_count_actions(
    digits_project, tmp_path, runner
):
    project, oracle, truth = digits_project
    out = tmp_path / "out"
    result = runner.invoke(main, [
        "simulate", str(project.root), "--oracle", str(oracle), "--budget", "40",
        "--batch", "20", "--strategy", "margin", "--mode", "cluster,grid", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "the silhouette suggests" in result.output  # the admin's clustering finished
    for mode in ("cluster", "grid"):
        line = next(x for x in result.output.splitlines()
                    if x.startswith(f"margin {mode}: ") and "labels per 100 actions" in x)
        assert "100.0% of the labels are right" in line, line
    with (out / "learning_curve.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["mode"] for r in rows} == {"cluster", "grid"}
    for mode in ("cluster", "grid"):
        mine = [r for r in rows if r["mode"] == mode]
        assert mine and int(mine[-1]["labels"]) >= 40
        actions = [int(r["actions"]) for r in mine]
        assert actions == sorted(actions) and actions[-1] > 0

    # The votes went through the grids: source 'cluster' or 'grid' (the grid mode's first
    # batch one by one, 'web'), all true, none on a held-out image.
    for mode, sources in (("cluster", {"cluster", "web"}), ("grid", {"grid", "web"})):
        conn = sqlite3.connect(out / f"sim-margin-{mode}" / "activelabel.db")
        try:
            votes = conn.execute(
                "SELECT i.rel_path, c.name, a.source FROM annotations a JOIN images i"
                " ON i.id = a.image_id JOIN classes c ON c.id = a.class_id"
                " WHERE a.kind = 'label'").fetchall()
        finally:
            conn.close()
        assert {source for _, _, source in votes} <= sources
        assert mode in {source for _, _, source in votes}
        assert all(truth[name] == label for name, label, _ in votes)
        held = planning.held_out(list(truth), seed=3)
        assert not {name for name, _, _ in votes} & held


def test_grid_modes_take_one_annotator_and_known_modes(digits_project, tmp_path, runner):
    project, oracle, _ = digits_project
    common = ["simulate", str(project.root), "--oracle", str(oracle), "--out",
              str(tmp_path / "out")]
    result = runner.invoke(main, [*common, "--mode", "sideways"])
    assert result.exit_code == 1 and "unknown --mode 'sideways'" in result.output
    result = runner.invoke(main, [*common, "--mode", "grid", "--annotators", "0.9,0.8"])
    assert result.exit_code == 1 and "simulate one annotator" in result.output
    result = runner.invoke(main, [*common, "--mode", "cluster", "--clusters", "0"])
    assert result.exit_code == 2


def test_what_a_page_costs():
    answers = ["7", "7", "1", "7", None, "7", "7", "7"]
    verdict = judge_cluster_page(answers)
    assert verdict == ("7", [2, 4])  # the odd one out, and the image it has no answer for
    assert judge_cluster_page(["1", "2", "3", "7"]) is None  # mixed
    assert judge_verify_page(["3", "5", "3"], "3") == [1]
    # Clicks: the class key, a click per toggle, Enter; the keyboard walks to each toggle.
    assert page_actions([2, 4], pick_class=True) == 4
    assert page_actions([], pick_class=False) == 1
    # 0 -> 2: two steps right; 2 -> 9: one down, one left; two spaces; Enter.
    assert keyboard_actions([2, 9], pick_class=False, columns=8) == 2 + 2 + 2 + 1
    tally = ActionTally()
    tally.page([2], pick_class=True, labeled=40)
    tally.single(labeled=True)
    tally.single(labeled=False, free=True)  # a held-out image the simulation skips
    tally.mixed_cluster()
    assert (tally.labels, tally.actions, tally.pages, tally.mixed) == (41, 5, 1, 1)
    assert tally.per_100() == pytest.approx(820.0)
