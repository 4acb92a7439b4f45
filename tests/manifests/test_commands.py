"""Every `maskrcnn ...` command the manifests and the serving image run parses with the real CLI
(so a renamed flag breaks this test, not a cluster run hours later)."""

from __future__ import annotations

import contextlib
import io
import re
import shlex

import pytest

from maskrcnn.cli import build_parser

from .render import KUSTOMIZATIONS, ROOT, containers, object_name, pod_specs, rendered

_ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def maskrcnn_commands(objects) -> list[tuple[str, list[str]]]:
    """``(where, argv after "maskrcnn")`` for each container command, and for the program that the
    MPIJob launcher's mpirun starts on every rank."""
    found = []
    for obj in objects:
        for _, pod in pod_specs(obj):
            for container in containers(pod):
                argv = [*(container.get("command") or []), *(container.get("args") or [])]
                where = f"{object_name(obj)} {container['name']}"
                if argv[:1] == ["maskrcnn"]:
                    found.append((where, argv[1:]))
                elif argv[:2] == ["/bin/bash", "-c"] and "mpirun" in argv[2]:
                    words = shlex.split(argv[2].splitlines()[-1])
                    found.append((where + " (mpirun)", words[words.index("maskrcnn") + 1:]))
    return found


def entrypoint_command() -> list[str]:
    """The `maskrcnn serve ...` line of the SageMaker entrypoint, with its defaults filled in."""
    text = (ROOT / "images" / "serve" / "entrypoint.sh").read_text()
    line = next(l for l in text.splitlines() if l.strip().startswith("exec maskrcnn"))
    line = re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", line.replace('"$@"', ""))
    return shlex.split(line)[2:]


def parses(argv: list[str]) -> str | None:
    """None when ``maskrcnn argv`` parses, else argparse's message."""
    argv = [_ENV_REF.sub("value", word) for word in argv]  # $(RUN_ID) is filled in by the kubelet
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            build_parser().parse_args(argv)
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1]
    return None


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_manifest_commands_parse(kustomization):
    commands = maskrcnn_commands(rendered(kustomization))
    assert len(commands) >= 7
    assert {where: problem for where, argv in commands if (problem := parses(argv))} == {}


def test_serving_entrypoint_command_parses():
    assert parses(entrypoint_command()) is None


def test_a_wrong_flag_is_reported():
    assert "unrecognized arguments" in parses(["train", "--data", "d", "--model-dir", "m", "--epochs", "3"])
