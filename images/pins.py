"""Derive an image's pip requirements and constraints from the project's one lock (stdlib only).

Runs inside ``docker build`` (Python 3.11+ for ``tomllib``), so the Dockerfiles keep no hand-made
copy of the dependency list:

- ``pins.py requirements [--exclude NAME ...] [--exclude-installed]`` prints ``pyproject.toml``'s
  runtime dependencies minus the excluded ones (the pipeline image leaves TensorFlow out; the
  training image also leaves out everything NVIDIA's NGC base already carries, built for its CUDA).
- ``pins.py constraints --keep-installed`` prints ``constraints.txt`` with every package already
  installed in the image pinned to its installed version instead. pip then installs the project's
  pins for everything new and refuses (fails the build) rather than replacing a package the base
  image brought, such as NGC's TensorFlow, Horovod, NumPy or protobuf.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path
from typing import Iterable, Mapping

ROOT = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """PEP 503 normalized project name: ``PyYAML`` -> ``pyyaml``, ``faster_coco_eval`` -> ``faster-coco-eval``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str | None:
    """Canonical project name of a requirement or constraint line; None for blanks and comments."""
    line = line.split("#", 1)[0]
    match = _NAME.match(line)
    return canonical(match.group(1)) if match else None


def runtime_requirements(
    pyproject_text: str, exclude: Iterable[str] = (), installed: Iterable[str] = ()
) -> list[str]:
    """``[project].dependencies`` of a pyproject.toml without the excluded and the installed names.

    An ``exclude`` name that is not a dependency is an error (a typo would silently keep the
    package); ``installed`` names are simply skipped.
    """
    dependencies = tomllib.loads(pyproject_text)["project"]["dependencies"]
    excluded = {canonical(name) for name in exclude}
    unknown = excluded - {requirement_name(dep) for dep in dependencies}
    if unknown:
        raise SystemExit(f"pins.py: --exclude {', '.join(sorted(unknown))}: not a dependency in pyproject.toml")
    skipped = excluded | {canonical(name) for name in installed}
    return [dep for dep in dependencies if requirement_name(dep) not in skipped]


def constraints_keeping(constraints_text: str, installed: Mapping[str, str]) -> list[str]:
    """The lock's ``name==version`` lines, with installed packages pinned to what is installed.

    ``installed`` maps canonical names to versions. Packages the lock does not mention but the image
    has are pinned too, so no dependency resolution can upgrade or downgrade them.
    """
    lines = []
    for line in constraints_text.splitlines():
        name = requirement_name(line)
        if name is not None and name not in installed:
            lines.append(line.split("#", 1)[0].strip())
    lines.extend(f"{name}=={version}" for name, version in sorted(installed.items()))
    return lines


def installed_versions() -> dict[str, str]:
    """Canonical name -> version of every distribution in this interpreter's environment."""
    versions = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions[canonical(name)] = dist.version
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    requirements = commands.add_parser("requirements", help="runtime dependencies from pyproject.toml")
    requirements.add_argument("--exclude", action="append", default=[], metavar="NAME")
    requirements.add_argument("--exclude-installed", action="store_true", help="skip what the image already has")
    constraints = commands.add_parser("constraints", help="constraints.txt, optionally keeping installed packages")
    constraints.add_argument("--keep-installed", action="store_true")
    parser.add_argument("--root", type=Path, default=ROOT, help="project root (pyproject.toml, constraints.txt)")
    args = parser.parse_args(argv)

    if args.command == "requirements":
        installed = installed_versions() if args.exclude_installed else {}
        lines = runtime_requirements((args.root / "pyproject.toml").read_text(), args.exclude, installed)
    else:
        installed = installed_versions() if args.keep_installed else {}
        lines = constraints_keeping((args.root / "constraints.txt").read_text(), installed)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
