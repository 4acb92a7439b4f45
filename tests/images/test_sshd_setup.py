"""images/train/sshd-setup.sh (run at build time) writes the ssh configuration mpi-operator's
launch needs, under a temporary root instead of the image's /."""

from __future__ import annotations

import getpass
import subprocess

import pytest

from .dockerfiles import ROOT

SCRIPT = ROOT / "images" / "train" / "sshd-setup.sh"


@pytest.fixture
def setup(tmp_path):
    user = getpass.getuser()
    (tmp_path / "etc/ssh/ssh_config.d").mkdir(parents=True)
    (tmp_path / "etc/ssh/ssh_host_ed25519_key").write_text("baked-in key")
    (tmp_path / "home" / user).mkdir(parents=True)
    env = {"PATH": "/usr/local/mpi/bin:/usr/bin:/bin", "LD_LIBRARY_PATH": "/opt/amazon/ofi-nccl/lib:/usr/local/cuda/lib64",
           "NCCL_DEBUG": "WARN", "CUDA_HOME": "/usr/local/cuda", "OPAL_PREFIX": "/opt/hpcx/ompi",
           "UNRELATED": "x", "NCCL_SPACED": "a b", "SSH_PORT": "2222"}
    subprocess.run(["bash", str(SCRIPT), user, "2222", str(tmp_path)], env=env, check=True, timeout=30,
                   capture_output=True)
    return tmp_path, user


def test_no_host_key_is_baked_into_the_image(setup):
    root, _ = setup
    assert not list((root / "etc/ssh").glob("ssh_host_*"))


def test_client_reaches_workers_on_the_sshd_port_without_known_hosts(setup):
    root, _ = setup
    config = (root / "etc/ssh/ssh_config.d/mpi-operator.conf").read_text().split()
    for key, value in (("Port", "2222"), ("StrictHostKeyChecking", "no"), ("UserKnownHostsFile", "/dev/null")):
        assert config[config.index(key) + 1] == value


def test_non_root_sshd_uses_the_mounted_key_and_carries_the_image_environment(setup):
    root, user = setup
    lines = (root / "home" / user / ".sshd_config").read_text().splitlines()
    options = {line.split()[0]: line.split()[1:] for line in lines}
    assert options["Port"] == ["2222"]
    assert options["HostKey"] == [f"/home/{user}/.ssh/id_rsa"]
    assert options["PidFile"] == [f"/home/{user}/sshd.pid"]
    assert options["AllowUsers"] == [user] and options["PasswordAuthentication"] == ["no"]
    assert options["StrictModes"] == ["no"]
    # sshd honours only the first SetEnv line: everything on one.
    assert sum(line.startswith("SetEnv") for line in lines) == 1
    assert sorted(options["SetEnv"]) == [
        "CUDA_HOME=/usr/local/cuda", "LD_LIBRARY_PATH=/opt/amazon/ofi-nccl/lib:/usr/local/cuda/lib64",
        "NCCL_DEBUG=WARN", "OPAL_PREFIX=/opt/hpcx/ompi", "PATH=/usr/local/mpi/bin:/usr/bin:/bin"]
