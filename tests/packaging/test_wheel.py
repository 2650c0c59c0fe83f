"""The wheel and the sdist as a user gets them: built, installed into a fresh virtualenv, served by daphne.

One test, in steps (about a minute; it needs PyPI or pip's cache, no server of ours):

1. Copy the working tree (files git tracks or would add: ``git ls-files -co --exclude-standard``) and
   build the sdist and, from the sdist, the wheel with ``python -m build`` (from this interpreter if
   it has ``build``, otherwise from a throwaway virtualenv), so the repository gets no build output.
2. The wheel holds every file of the package in the working tree (modules, migrations, templates,
   static files, ``py.typed``, management commands) and nothing else; its metadata states
   pyproject.toml's requirements; the sdist holds the same package files.
3. A fresh virtualenv gets the wheel (not editable) with its ``redis`` extra and its dependencies at
   requirements.txt's pins. A tiny project outside the repository, with ``signalr_groups`` in
   ``INSTALLED_APPS`` and one hub, passes ``check``, ``migrate`` and ``makemigrations --check``,
   finds the admin template and the management commands, and imports ``signalr_groups`` from
   that virtualenv's site-packages.
4. daphne from that virtualenv serves the project on a free 127.0.0.1 port; a raw WebSocket client
   negotiates, shakes hands and invokes one hub method (which also sends to its caller). The server
   is stopped by its PID.
5. A second fresh virtualenv gets the sdist (pip builds it): its installed package files are the wheel's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.live import stop_process

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "signalr_groups"
DISTRIBUTION = "signalr-groups"
RECORD_SEPARATOR = "\x1e"


def run(command: list[str], *, timeout: float = 240, **kwargs: Any) -> str:
    """Run ``command`` to completion (bounded); its output, or a failure that shows it."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{output[-6000:]}"
    return output


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would point a child at the repository or its virtualenv."""
    dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE", "PYTHONSTARTUP"}
    return {**{key: value for key, value in os.environ.items() if key not in dropped}, **extra}


def new_venv(path: Path, *, with_pip: bool = False) -> Path:
    """A fresh virtualenv at ``path`` (pip installs into it from outside with ``pip --python``); its python."""
    run([sys.executable, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(path)], timeout=120)
    return path / "bin" / "python"


def pip_into(python: Path, *arguments: str) -> str:
    """``pip install`` into the virtualenv of ``python``, with this virtualenv's pip."""
    return run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", *arguments], timeout=600)


def copy_working_tree(destination: Path) -> Path:
    """The files git tracks or would add (not ignored ones: no .venv, node_modules, egg-info)."""
    # A failure, not a skip: the test needs git to know which files belong to the source tree.
    assert shutil.which("git") is not None and (ROOT / ".git").exists(), "tests/packaging needs a git checkout"
    listing = run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
    for name in filter(None, listing.split("\0")):
        source = ROOT / name
        if source.is_file():  # not a tracked file deleted in the working tree
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def build_frontend(scratch: Path) -> list[str]:
    """``python -m build`` from this interpreter if it has it, else from a throwaway virtualenv."""
    spec = importlib.util.find_spec("build")
    # (origin None: a namespace package, such as the repository's own build/ output folder, not pypa/build)
    if spec is not None and spec.origin is not None:
        return [sys.executable, "-m", "build"]
    python = new_venv(scratch / "builder", with_pip=True)
    run([str(python), "-m", "pip", "install", "--quiet", "build>=1.2,<2"], timeout=300)
    return [str(python), "-m", "build"]


def package_files(names: list[str], prefix: str = "") -> set[str]:
    """The package's files among archive or RECORD ``names``, relative to the package's parent."""
    found: set[str] = set()
    for name in names:
        if prefix:
            if not name.startswith(prefix):
                continue
            name = name[len(prefix) :]
        path = PurePosixPath(name)
        if path.parts and path.parts[0] == PACKAGE and "__pycache__" not in path.parts and not name.endswith("/"):
            found.add(name)
    return found


def pins_as_constraints(path: Path) -> Path:
    """requirements.txt's pins as pip constraints (which may not name extras)."""
    lines = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            requirement.extras = set()
            lines.append(str(requirement))
    path.write_text("\n".join(lines) + "\n")
    return path


PROJECT_FILES = {
    "manage.py": """
        import os
        import sys

        if __name__ == "__main__":
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smoke.settings")
            from django.core.management import execute_from_command_line

            execute_from_command_line(sys.argv)
    """,
    "smoke/__init__.py": "",
    "smoke/settings.py": """
        from pathlib import Path

        BASE_DIR = Path(__file__).resolve().parent.parent
        SECRET_KEY = "packaging-smoke-test-only"
        DEBUG = False
        ALLOWED_HOSTS = ["127.0.0.1"]
        INSTALLED_APPS = [
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
            "channels",
            "signalr_groups",
        ]
        MIDDLEWARE = [
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ]
        ROOT_URLCONF = "smoke.urls"
        ASGI_APPLICATION = "smoke.asgi.application"
        TEMPLATES = [
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ]
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
        CHANNEL_LAYERS = {
            "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}
        }
        STATIC_URL = "static/"
        USE_TZ = True
        DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
    """,
    "smoke/hubs.py": """
        from signalr_groups import Hub, hub_method


        class SmokeHub(Hub):
            hub_name = "smoke"

            @hub_method
            async def echo(self, text: str) -> str:
                await self.clients.caller.send("Echoed", text.upper())
                return text
    """,
    "smoke/urls.py": """
        from django.contrib import admin
        from django.urls import path

        from signalr_groups.routing import negotiate_path
        from smoke.hubs import SmokeHub

        urlpatterns = [path("admin/", admin.site.urls), negotiate_path("smokeHub", SmokeHub)]
    """,
    "smoke/asgi.py": """
        import os

        from django.core.asgi import get_asgi_application

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "smoke.settings")
        django_asgi_app = get_asgi_application()

        from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

        from signalr_groups.routing import HubHttpRouter, HubMiddlewareStack, websocket_path  # noqa: E402
        from smoke.hubs import SmokeHub  # noqa: E402

        hubs = [websocket_path("smokeHub", SmokeHub)]
        application = ProtocolTypeRouter(
            {"http": HubHttpRouter(hubs, django_asgi_app), "websocket": HubMiddlewareStack(URLRouter(hubs))}
        )
    """,
}

#: Run in the project with the fresh virtualenv: where the package, its template and metadata come from.
INSPECT = """
import importlib.metadata, json, sysconfig
import django
django.setup()
from django.template.loader import get_template
import signalr_groups
distribution = importlib.metadata.distribution("signalr-groups")
print(json.dumps({
    "module": signalr_groups.__file__,
    "purelib": sysconfig.get_paths()["purelib"],
    "template": str(get_template("admin/signalr_groups/live_connections.html").origin.name),
    "direct_url": json.loads(distribution.read_text("direct_url.json") or "{}"),
    "version": distribution.version,
}))
"""


def make_project(directory: Path) -> Path:
    for name, text in PROJECT_FILES.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return directory


def start_daphne(python: Path, project: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """daphne from the fresh virtualenv on a free loopback port; the process and its port."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(python), "-m", "daphne", "-b", "127.0.0.1", "-p", "0", "smoke.asgi:application"],
            cwd=project,
            env=clean_env(DJANGO_SETTINGS_MODULE="smoke.settings"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    pattern = re.compile(r"Listening on TCP address 127\.0\.0\.1:(\d+)")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = pattern.search(log_path.read_text(errors="replace"))
        if match:
            return process, int(match.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    stop_process(process)
    raise AssertionError(f"daphne did not start:\n{log_path.read_text(errors='replace')}")


def signalr_messages(frame: str | bytes) -> list[dict[str, Any]]:
    text = frame.decode() if isinstance(frame, bytes) else frame
    return [json.loads(part) for part in text.split(RECORD_SEPARATOR) if part]


def negotiate_handshake_invoke(port: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Negotiate, the JSON handshake and one invocation of Echo; negotiate's answer and what came back."""
    from websockets.sync.client import connect

    request = urllib.request.Request(f"http://127.0.0.1:{port}/smokeHub/negotiate?negotiateVersion=1", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        negotiated: dict[str, Any] = json.loads(response.read())
    url = f"ws://127.0.0.1:{port}/smokeHub?id={negotiated['connectionToken']}"
    received: list[dict[str, Any]] = []
    with connect(url, open_timeout=10, close_timeout=5) as websocket:
        websocket.send(json.dumps({"protocol": "json", "version": 1}) + RECORD_SEPARATOR)
        assert signalr_messages(websocket.recv(timeout=10)) == [{}], "the handshake was not answered with {}"
        invocation = {"type": 1, "invocationId": "1", "target": "Echo", "arguments": ["hello"]}
        websocket.send(json.dumps(invocation) + RECORD_SEPARATOR)
        deadline = time.monotonic() + 10
        while not any(message.get("type") == 3 for message in received):
            assert time.monotonic() < deadline, f"no completion; received {received}"
            received.extend(m for m in signalr_messages(websocket.recv(timeout=10)) if m.get("type") != 6)
    return negotiated, received


def test_the_wheel_and_sdist_install_and_serve_a_hub(tmp_path: Path) -> None:
    source = copy_working_tree(tmp_path / "source")
    dist = tmp_path / "dist"
    # From the scratch folder: the repository's build/ output folder must not shadow pypa/build.
    run([*build_frontend(tmp_path), "--outdir", str(dist), str(source)], timeout=300, cwd=tmp_path)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")

    # The wheel holds exactly the package's files; its metadata states pyproject.toml's requirements.
    expected = {str(path.relative_to(source).as_posix()) for path in (source / PACKAGE).rglob("*") if path.is_file()}
    expected = package_files(sorted(expected))
    for must_ship in ("py.typed", "migrations/__init__.py", "migrations/0001_initial.py", "apps.py"):
        assert f"{PACKAGE}/{must_ship}" in expected, f"the source tree has no {must_ship}"
    assert any(name.startswith(f"{PACKAGE}/templates/") for name in expected)
    assert any(name.startswith(f"{PACKAGE}/management/commands/") for name in expected)
    with zipfile.ZipFile(wheel) as archive:
        wheel_files = package_files(archive.namelist())
        (metadata_name,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata_name).decode()
    assert sorted(expected - wheel_files) == [], "package files missing from the wheel (declare them as package-data)"
    assert sorted(wheel_files - expected) == [], "files in the wheel that the source tree does not have"
    project_table = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    stated = {
        str(Requirement(line.split(":", 1)[1].strip()))
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:")
    }
    declared = {str(Requirement(text)) for text in project_table["dependencies"]}
    declared |= {
        str(Requirement(f'{text}; extra == "redis"')) for text in project_table["optional-dependencies"]["redis"]
    }
    assert stated == declared
    for classifier in project_table["classifiers"]:
        assert f"Classifier: {classifier}" in metadata
    assert f"Requires-Python: {project_table['requires-python']}" in metadata

    # The sdist holds the same package files (and what building it needs).
    with tarfile.open(sdist) as tarball:
        sdist_names = [member.name for member in tarball.getmembers() if member.isfile()]
    (top,) = {name.split("/", 1)[0] for name in sdist_names}
    assert package_files(sdist_names, prefix=f"{top}/") == wheel_files
    for needed in ("pyproject.toml", "PKG-INFO", "README.md", "LICENSE"):
        assert f"{top}/{needed}" in sdist_names

    # A fresh virtualenv with the wheel and its dependencies (at requirements.txt's pins).
    constraints = pins_as_constraints(tmp_path / "constraints.txt")
    venv = tmp_path / "venv"
    python = new_venv(venv)
    pip_into(python, f"{wheel}[redis]", "-c", str(constraints))
    project = make_project(tmp_path / "project")
    env = clean_env(DJANGO_SETTINGS_MODULE="smoke.settings")

    def manage(*arguments: str) -> str:
        return run([str(python), "manage.py", *arguments], cwd=project, env=env, timeout=120)

    manage("check", "--fail-level", "WARNING")
    migrated = manage("migrate", "--no-input")
    assert "Applying signalr_groups.0001_initial... OK" in migrated, migrated
    manage("makemigrations", "--check", "--dry-run", PACKAGE)
    commands = manage("help")
    assert "[signalr_groups]" in commands and "signalr_connections" in commands, commands
    found = json.loads(run([str(python), "-c", INSPECT], cwd=project, env=env).strip().splitlines()[-1])
    site_packages = Path(found["purelib"])
    assert site_packages.is_relative_to(venv)
    for key in ("module", "template"):
        assert Path(found[key]).is_relative_to(site_packages / PACKAGE), found
        assert not Path(found[key]).is_relative_to(ROOT), found
    assert "dir_info" not in found["direct_url"], "an editable or directory install, not the wheel"
    assert found["version"] == project_table["version"]

    # daphne from that virtualenv; negotiate, handshake and one invocation over a raw WebSocket.
    log_path = tmp_path / "daphne.log"
    process, port = start_daphne(python, project, log_path)
    try:
        negotiated, received = negotiate_handshake_invoke(port)
    finally:
        stop_process(process)
    log = log_path.read_text(errors="replace")
    assert process.returncode is not None
    assert negotiated["negotiateVersion"] == 1
    assert "WebSockets" in [transport["transport"] for transport in negotiated["availableTransports"]]
    assert {"type": 1, "target": "Echoed", "arguments": ["HELLO"]} in received, received
    assert {"type": 3, "invocationId": "1", "result": "hello"} in received, received
    assert "Traceback" not in log, log

    # The sdist, installed into another fresh virtualenv (pip builds it), gives the same package files.
    sdist_python = new_venv(tmp_path / "sdist-venv")
    pip_into(sdist_python, "--no-deps", str(sdist))
    listing = "import importlib.metadata as m, json; print(json.dumps([str(f) for f in m.files('signalr-groups')]))"
    installed = json.loads(run([str(sdist_python), "-c", listing], cwd=tmp_path, env=clean_env()))
    assert package_files(installed) == wheel_files
    assert canonicalize_name(DISTRIBUTION) == canonicalize_name(project_table["name"])
