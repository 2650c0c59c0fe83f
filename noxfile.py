"""The versions a Django team runs: the supported Django LTS releases, and the lowest supported dependencies.

    .venv/bin/nox                          # every session below, one after the other (2-3 min; 1.5 reusing them)
    .venv/bin/nox -s "django(4.2)"         # one session; -l lists them
    .venv/bin/nox -s minimums -- -x -k negotiate   # arguments after -- go to pytest

Sessions (Python 3.11):

- ``django(4.2)`` and ``django(5.2)``: the newest release of that LTS, everything else at
  requirements.txt's pins.
- ``minimums``: every dependency of [project] (and of the ``redis`` extra) at the lowest version
  its range in pyproject.toml allows (``>=X`` installs ``==X``), so the ranges we publish are tested.
  With a ``redis-server`` on PATH it also runs the channels-redis layer tests against a real Redis
  (each starts its own on a free loopback port; a few seconds).

Each session installs the package editable with its ``redis`` extra, the version overrides and the
test tools in one pip call, so pip checks the published ranges against the versions under test (a
range that excludes them fails the install), then runs Django's system checks, the migrations check
(the shipped migrations match the models on that Django) and the pure and in-process parts of the
suite (tests/unit, tests/inprocess), which need no server, Redis or Node. Tests and tools not under
test come from requirements.txt's pins.

Virtualenvs live in build/nox (ignored by git) and are reused: a session reinstalls only when what it
would install changes (pyproject.toml, requirements.txt or this file's lists). ``nox -N`` starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import tomllib
from collections.abc import Set as AbstractSet
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

nox.needs_version = ">=2025.2.9"
nox.options.envdir = "build/nox"
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["django", "minimums"]

ROOT = Path(__file__).resolve().parent
PYTHON = "3.11"
#: The Django LTS releases we support, newest patch release of each.
DJANGO_LTS = ("4.2", "5.2")
#: The parts of the suite that need nothing but Python (see docs/reference/tests.md).
TEST_PATHS = ("tests/unit", "tests/inprocess")
#: In the minimums session, with a redis-server on PATH: both channels-redis layers against a real Redis
#: (a redis-server of their own on a free loopback port; a few seconds), for the channels-redis floor.
REDIS_LAYER_TESTS = (
    "tests/scaleout/test_redis_layers.py",
    "tests/scaleout/test_members.py",
    "tests/scaleout/test_layer_pitfalls.py",
)
#: What those parts import besides the package and its dependencies (versions from requirements.txt).
TEST_TOOLS = ("pytest", "pytest-django", "pytest-asyncio", "pytest-timeout", "hypothesis", "uvicorn")
#: Distributions whose versions the sessions print first.
SHOWN = (
    "Django",
    "channels",
    "channels-redis",
    "redis",
    "asgiref",
    "daphne",
    "Twisted",
    "autobahn",
    "msgpack",
    "prometheus-client",
)


def _requirement_lines(text: str) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def pins(overridden: AbstractSet[str]) -> list[str]:
    """requirements.txt as pip constraints, less the ``overridden`` (canonical) names.

    Constraints may not name extras (``uvicorn[standard]`` constrains ``uvicorn``).
    """
    constraints: list[str] = []
    for requirement in _requirement_lines((ROOT / "requirements.txt").read_text()):
        if canonicalize_name(requirement.name) in overridden:
            continue
        requirement.extras = set()
        constraints.append(str(requirement))
    return constraints


def published_requirements() -> list[Requirement]:
    """[project] dependencies and the ``redis`` extra's, as pyproject.toml states them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in [*project["dependencies"], *project["optional-dependencies"]["redis"]]]


def floors() -> list[str]:
    """``name==X`` for every published requirement whose range starts at ``>=X``."""
    lowest: list[str] = []
    for requirement in published_requirements():
        bounds = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(bounds) != 1:
            raise ValueError(f"{requirement}: the minimums session needs exactly one lower bound (>=X)")
        marker = f"; {requirement.marker}" if requirement.marker else ""
        lowest.append(f"{requirement.name}=={bounds[0]}{marker}")
    return lowest


def install(session: nox.Session, overrides: list[str]) -> None:
    """The package (editable, with its redis extra), ``overrides`` and the test tools, in one pip call."""
    overridden = {canonicalize_name(Requirement(item).name) for item in overrides}
    constraints = "\n".join(pins(overridden)) + "\n"
    arguments = ["-e", ".[redis]", *overrides, *TEST_TOOLS]
    fingerprint = hashlib.sha256(
        json.dumps([arguments, constraints, (ROOT / "pyproject.toml").read_text()]).encode()
    ).hexdigest()
    stamp = Path(session.virtualenv.location) / ".signalr-groups-installed"
    if stamp.exists() and stamp.read_text() == fingerprint:
        session.log("reusing the virtualenv: nothing to install has changed")
        return
    constraints_file = Path(session.create_tmp()) / "constraints.txt"
    constraints_file.write_text(constraints)
    session.install(*arguments, "-c", str(constraints_file))
    stamp.write_text(fingerprint)


def run_checks_and_tests(session: nox.Session, extra_tests: tuple[str, ...] = ()) -> None:
    show = "import sys; from importlib.metadata import version; print(*(f'{n} {version(n)}' for n in sys.argv[1:]))"
    session.run("python", "-c", show, *SHOWN)
    with tempfile.TemporaryDirectory(prefix="signalr-nox-") as scratch:
        # As .ci/run does with the main virtualenv: system checks and migrations on the demo project.
        env = {"DEMO_DB_PATH": str(Path(scratch) / "checks.sqlite3")}
        session.run("python", "manage.py", "check", "--fail-level", "WARNING", env=env)
        session.run("python", "manage.py", "makemigrations", "--check", "--dry-run", env=env)
    session.run(
        "python", "-m", "pytest", *TEST_PATHS, *extra_tests, "-p", "no:cacheprovider", *session.posargs,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings"},
    )  # fmt: skip


@nox.session(name="django", python=PYTHON, tags=["ci"])
@nox.parametrize("django", DJANGO_LTS, ids=list(DJANGO_LTS))
def django_lts(session: nox.Session, django: str) -> None:
    """The newest release of a Django LTS; everything else at requirements.txt's pins."""
    install(session, [f"Django~={django}.0"])
    run_checks_and_tests(session)


@nox.session(python=PYTHON, tags=["ci"])
def minimums(session: nox.Session) -> None:
    """Every published dependency at the lowest version pyproject.toml allows."""
    install(session, floors())
    if shutil.which("redis-server"):
        run_checks_and_tests(session, REDIS_LAYER_TESTS)
    else:
        session.warn("no redis-server on PATH: the channels-redis layers are not tried against a real Redis")
        run_checks_and_tests(session)
