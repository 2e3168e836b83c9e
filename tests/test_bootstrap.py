"""scripts/bootstrap.sh: the one list of system packages, used by make and CI, and its message on a machine where
a prerequisite is missing and cannot be installed. Nothing is installed or removed here: a missing prerequisite
is simulated by pointing a probe at a command that cannot exist (STREAMER_BOOTSTRAP_PROBES)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "bootstrap.sh"
NO_SUCH_COMMAND = "streamer-test-no-such-command"


def bootstrap(*args: str, env: dict[str, str] | None = None, as_user: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the script; `as_user` runs it as an unprivileged user (nobody) when the tests run as root."""
    full_env = {"PATH": os.environ["PATH"], **(env or {})}
    if not (as_user and os.geteuid() == 0):
        return subprocess.run([str(SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=60, cwd=REPO)
    # A copy in a directory nobody may read: the checkout (and pytest's tmp_path) may be root's alone.
    with tempfile.TemporaryDirectory() as where:
        os.chmod(where, 0o755)
        script = Path(where) / SCRIPT.name
        shutil.copy(SCRIPT, script)
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(script), *args]
        return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=60, cwd=where)


def packages() -> list[str]:
    result = bootstrap("list")
    assert result.returncode == 0, result.stderr
    return str(result.stdout).split()


def test_the_list_holds_what_the_project_needs() -> None:
    assert {
        "make",
        "curl",
        "openjdk-17-jre-headless",
        "maven",
        "golang-go",
        "python3-venv",
        "chromium",
        "systemd",
        "redis-server",
        "redis-sentinel",
        "redis-tools",
    } <= set(packages())


def test_ci_runs_the_bootstrap_then_lint_then_the_readme_test_command_and_lists_no_package() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in ci.splitlines())  # comments may name things
    steps = [m.group(0) for m in re.finditer(r"scripts/bootstrap\.sh|make lint|make test", code)]
    assert steps == ["scripts/bootstrap.sh", "make lint", "make test"]
    assert "apt" not in code and "dpkg" not in code
    # "make" is also the command CI runs; every other package name would be a second list.
    named = [p for p in packages() if p != "make" and re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", code)]
    assert named == []


def test_no_other_file_installs_system_packages() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    installing = [
        name
        for name in tracked
        if (REPO / name).is_file()
        and re.search(r"apt(-get)? install", (REPO / name).read_text(errors="replace"))
        and name not in ("scripts/bootstrap.sh", "tests/test_bootstrap.py")
    ]
    assert installing == []


@pytest.mark.parametrize("target", ["run", "run-scaled", "test"])
def test_make_checks_the_prerequisites_before_anything_else(target: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}  # under make (CI)
    dry = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", target],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[0] == "scripts/bootstrap.sh"


def test_nothing_missing_is_silent() -> None:
    result = bootstrap("check")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs setpriv to drop root")
@pytest.mark.parametrize(
    "package, probe",
    [("chromium", NO_SUCH_COMMAND), ("python3-venv", "py:streamer_test_no_such_module")],
)
def test_a_missing_prerequisite_without_root_prints_the_install_line(package: str, probe: str) -> None:
    result = bootstrap(env={"STREAMER_BOOTSTRAP_PROBES": f"{package}={probe}"}, as_user=True)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == [
        f"[bootstrap] missing: {package} (not root). Install them with:",
        f"    sudo apt-get install -y {package}",
    ]


def test_check_only_never_installs_and_names_every_missing_package() -> None:
    probes = f"chromium={NO_SUCH_COMMAND} redis-tools={NO_SUCH_COMMAND}-2"
    result = bootstrap("check", env={"STREAMER_BOOTSTRAP_PROBES": probes})
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "    sudo apt-get install -y chromium redis-tools"


def test_an_unknown_command_is_refused_by_name() -> None:
    result = bootstrap("instal")
    assert result.returncode == 2
    assert "unknown command 'instal'" in result.stderr
