"""The README tells the truth: its commands are the ones CI runs, every command and
strategy explains itself, htmx is vendored with its licence."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import click

import strategies
from server.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    demo, tests = readme_blocks()[:2]
    assert demo.strip().endswith("activelabel demo")
    assert "pip install -e ." in demo
    ci_lines = [
        line for line in (ROOT / ".ci/run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd ", "export "))
    ]
    assert ci_lines == [tests.strip()], "the README's test command and .ci/run differ"
    assert "pytest" in tests


def _commands(group: click.Group, prefix: str = ""):
    for name, command in group.commands.items():
        yield prefix + name, command
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + name + " ")


def test_every_cli_command_and_option_has_help():
    for name, command in _commands(main):
        assert (command.help or "").strip(), f"`activelabel {name}` has no help text"
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "version":
                assert param.help, f"`activelabel {name}` option {param.opts} has no help text"


def test_every_cli_command_is_in_the_readme():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, command in _commands(main):
        if not isinstance(command, click.Group):
            assert f"activelabel {name}" in text, f"README does not mention `activelabel {name}`"


def test_every_strategy_has_a_description():
    assert "random" in strategies.names()
    for name in strategies.names():
        assert len(strategies.describe(name)) > 10


def test_htmx_is_vendored_with_its_licence_and_pinned_version():
    vendor = ROOT / "static" / "vendor" / "htmx"
    version = (vendor / "VERSION").read_text()
    digest = hashlib.sha256((vendor / "htmx.min.js").read_bytes()).hexdigest()
    assert "htmx.org 2.0.11" in version and digest in version
    assert "Zero-Clause BSD" in (vendor / "LICENSE").read_text()


def test_the_where_things_are_table_names_every_folder_and_only_real_files():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    for package in sorted(p.parent for p in (ROOT / "server").glob("*/__init__.py")):
        folder = f"`server/{package.name}/`"
        assert any(row.startswith(f"| {folder}") for row in rows), f"README lacks {folder}"
    # Every file the table names is there, in the folder of its row.
    for row in rows:
        first, rest = row.split("|")[1].strip(), "|".join(row.split("|")[2:])
        folder = first.split("`")[1] if first.split("`")[1].endswith("/") else "server/"
        for name in re.findall(r"`([\w/]+\.(?:py|html))`", first + rest):
            where = ROOT / name if "/" in name else ROOT / folder / name
            if name.endswith(".html"):
                where = ROOT / "templates" / name
            assert where.is_file(), f"README's table names {name}, which is not at {where}"
