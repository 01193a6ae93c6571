"""Issue 13 D11: the service starts from its installed package (as the Docker image runs it), not from the source
tree. Builds the wheel, checks that it carries every file of the packages, installs it into a fresh virtualenv and
runs `check`, `migrate` and `collectstatic` from a directory outside the source tree."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GIT = shutil.which("git") or "/usr/bin/git"
TEST_KEY = "dGVzdC1vbmx5LWtleS10ZXN0LW9ubHkta2V5LTMyYiE="  # test-only Fernet key, as config/test_settings.py


def _packages() -> list[str]:
    """The top-level packages pyproject.toml ships."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]]


def _source_files() -> set[str]:
    tracked = subprocess.run([GIT, "ls-files", *_packages()], cwd=ROOT, capture_output=True, text=True, check=True)
    return {line for line in tracked.stdout.splitlines() if line}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy of the tracked files, so a stale build/ directory or an untracked file cannot hide a gap.
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run([GIT, "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    # No build isolation and no dependencies: builds with the setuptools already installed, needs no network.
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                          "--wheel-dir", str(out), str(source)], cwd=out, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    (built,) = out.glob("exmaint-*.whl")
    return built


def test_the_wheel_carries_every_file_of_the_packages(wheel: Path) -> None:
    """Templates, CSS and migrations included; a package missing from pyproject's list fails here too."""
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(f for f in _source_files() if f not in names)
    assert not missing, f"not in the wheel: {missing[:20]}"
    assert "reports/templates/reports/report.css" in names
    assert "changes/migrations/0001_initial.py" in names
    top_level_dirs = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name != "tests"}
    assert top_level_dirs <= set(_packages()), "a package of the project is not in pyproject's package list"


def test_the_installed_package_checks_migrates_and_collects_static_outside_the_source_tree(
        wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    own_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies come from the test's own environment, appended after the new venv's site-packages (a plain
    # path line, so the source tree's editable-install hook there is not run).
    Path(own_site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--target", own_site, str(wheel)], check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "false",
        "SECRET_KEY": "packaging-test-secret-key-0123456789-abcdefghijklmnop", "FIELD_ENCRYPTION_KEY": TEST_KEY,
        "EXMAINT_VAR_DIR": str(tmp_path / "var"), "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "ALLOWED_HOSTS": "localhost",
    }

    def run(*args: str) -> str:
        res = subprocess.run([str(python), *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"{args}: {res.stdout[-2000:]}{res.stderr[-3000:]}"
        return res.stdout

    where = run("-c", "import changes, notifications, reports; print(changes.__file__, notifications.__file__)")
    assert str(ROOT) not in where and own_site in where, where
    run("-m", "django", "check", "--fail-level", "WARNING")
    run("-m", "django", "migrate", "--noinput", "-v", "0")
    run("-m", "django", "collectstatic", "--noinput", "-v", "0")
    assert (tmp_path / "var" / "static" / "admin" / "css" / "base.css").exists()
    assert list((tmp_path / "var" / "static" / "drf_spectacular_sidecar").rglob("swagger-ui-bundle.js"))
    # Every template the service renders loads from the installed package.
    run("-c", "import django; django.setup()\n"
              "from django.template.loader import get_template\n"
              "for name in ('reports/report.html', 'notifications/email/announcement.txt',\n"
              "             'notifications/email/base.html', 'admin/changes/change/decide.html'):\n"
              "    get_template(name)\n"
              "from django.contrib.staticfiles import finders\n"
              "assert finders.find('admin/css/base.css')\n")


def test_the_image_installs_the_wheel_and_the_stack_needs_no_source_tree() -> None:
    """The Dockerfile used to copy packages one by one and missed notifications/; docker-compose ran manage.py,
    which is not part of the package."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    copies = [line for line in final_stage.splitlines() if line.startswith("COPY")]
    assert copies and all("--from=build" in line for line in copies), copies
    assert "pip install --no-cache-dir /tmp/wheels/*.whl" in final_stage
    assert "manage.py" not in (ROOT / "docker-compose.yml").read_text()
