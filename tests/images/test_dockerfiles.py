"""Every Dockerfile passes hadolint with only justified inline ignores, starts from pinned bases,
and is built by `make images` under the registry and tag of maskrcnn/images.py."""

from __future__ import annotations

import re

import pytest

from maskrcnn import images

from .dockerfiles import DOCKERFILES, PINNED, ROOT, base_images, lint, makefile_images

IDS = [p.parent.name for p in DOCKERFILES]
_IGNORE = re.compile(r"^#\s*hadolint\s+ignore=([A-Z0-9,\s]+)$")


def test_the_four_images_exist():
    assert IDS == sorted(["data", "pipeline", "serve", "train"])


def test_no_global_hadolint_configuration():
    """Ignores live inline, next to their reason, never in a config file."""
    for name in (".hadolint.yaml", ".hadolint.yml", "hadolint.yaml"):
        assert not (ROOT / name).exists()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_hadolint_passes(dockerfile):
    result = lint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def _ignores(dockerfile):
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        match = _IGNORE.match(line.strip())
        if match:
            yield i, lines, [code.strip() for code in match.group(1).split(",") if code.strip()]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_each_inline_ignore_is_justified_and_needed(dockerfile, tmp_path):
    for i, lines, codes in _ignores(dockerfile):
        assert i > 0 and lines[i - 1].lstrip().startswith("#") and "hadolint" not in lines[i - 1], (
            f"{dockerfile}:{i + 1}: say why above `# hadolint ignore=...`")
        for code in codes:
            rest = [c for c in codes if c != code]
            edited = list(lines)
            edited[i] = f"# hadolint ignore={','.join(rest)}" if rest else "#"
            copy = tmp_path / "Dockerfile"
            copy.write_text("\n".join(edited) + "\n")
            result = lint(copy)
            assert code in result.stdout, f"{dockerfile}:{i + 1}: ignore of {code} suppresses nothing: remove it"


def test_hadolint_fails_on_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nRUN pip install requests\n")
    result = lint(bad)
    assert result.returncode != 0
    for code in ("DL3007", "DL3008", "DL3013"):  # latest tag, unpinned apt, unpinned pip
        assert code in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_base_images_are_pinned_by_tag_and_digest(dockerfile):
    bases = base_images(dockerfile)
    assert bases, "no FROM"
    for base in bases:
        assert PINNED.match(base), f"{dockerfile}: {base} is not pinned as name:tag@sha256:<digest>"


def test_ngc_base_is_tensorflow_25_02():
    assert any(b.startswith("nvcr.io/nvidia/tensorflow:25.02-tf2-py3@")
               for b in base_images(ROOT / "images" / "train" / "Dockerfile"))


def test_makefile_builds_every_image_under_the_defaults_of_maskrcnn_images():
    assert makefile_images() == {
        images.image(name): f"images/{name}/Dockerfile" for name in IDS}
    assert {images.DATA_IMAGE, images.TRAIN_IMAGE, images.SERVE_IMAGE, images.PIPELINE_IMAGE} == set(makefile_images())


def test_makefile_registry_and_tag_are_variables():
    built = makefile_images(REGISTRY="registry.example/team", TAG="1.2.3")
    assert set(built) == {f"registry.example/team/maskrcnn-{name}:1.2.3" for name in IDS}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_images_run_as_a_numeric_non_root_user(dockerfile):
    """A numeric USER lets the kubelet verify runAsNonRoot (it cannot for a user name)."""
    users = re.findall(r"^USER\s+(\S+)\s*$", dockerfile.read_text(), re.M)
    assert users and users[-1].isdigit() and int(users[-1]) != 0, f"{dockerfile}: final USER {users[-1:]}"
