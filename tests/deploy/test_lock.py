"""requirements.lock: complete for pyproject's dependencies, hash-pinned, and what the tests run on.

The Docker image installs exactly the lock (`--require-hashes --no-deps`, then `pip check`);
scripts/setup installs the test venv with the lock as constraints. So: every runtime dependency
must be pinned there (else the image build fails), and the test venv must have the pinned versions
(else the tests would pass on versions the image does not ship).
Re-lock after changing dependencies:
    pip-compile --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \\
        --no-emit-find-links --output-file requirements.lock pyproject.toml
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = (ROOT / "requirements.lock").read_text()


def pins() -> dict[str, str]:
    return {canonicalize_name(name): version
            for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", LOCK, re.M)}


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = pins()
    for text in project["dependencies"]:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock: re-run pip-compile (see this module)"
        assert requirement.specifier.contains(locked[name], prereleases=True), (name, locked[name])


def test_every_pin_carries_hashes() -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", LOCK.split("\n", 7)[-1])
    pinned = [b for b in blocks if re.match(r"[A-Za-z0-9_.-]+==", b)]
    assert pinned and all("--hash=sha256:" in b for b in pinned)


def test_the_test_environment_runs_on_the_locked_versions() -> None:
    drift = {name: (version, metadata.version(name)) for name, version in pins().items()
             if metadata.version(name) != version}
    assert drift == {}, f"installed differs from requirements.lock (run scripts/setup): {drift}"
