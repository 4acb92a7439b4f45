#!/usr/bin/env bash
# Build-time setup of OpenSSH for mpi-operator v2's ssh launch, sshd running as a non-root user.
#
# mpi-operator creates one key pair per MPIJob and mounts it at the job's sshAuthMountPath
# (/home/USER/.ssh: id_rsa, id_rsa.pub, authorized_keys). The launcher's mpirun reaches every
# worker with ssh; each worker runs `/usr/sbin/sshd -De -f /home/USER/.sshd_config` as USER.
#
# Usage: sshd-setup.sh USER PORT [ROOT]   (ROOT: a prefix for every path, for tests; default /)
set -euo pipefail

user="$1"
port="$2"
root="${3:-}"
home="/home/${user}"        # as the container sees it (inside sshd's config)

# Keys generated when openssh-server was installed would be identical in every container of
# every job (and public once the image is pushed): the per-job mounted key is the host key.
rm -f "${root}"/etc/ssh/ssh_host_*

# Client side (launcher): workers are fresh pods with fresh keys on every run, so there is no
# known host to check, and the mounted .ssh folder is read-only (no known_hosts writes).
cat > "${root}/etc/ssh/ssh_config.d/mpi-operator.conf" <<CONF
Host *
    Port ${port}
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    ConnectionAttempts 10
    LogLevel ERROR
CONF

# ssh sessions start with a bare environment, so orted and the Horovod ranks would not find
# NGC's MPI, CUDA and NCCL. Carry the image's paths and toolkit settings into every session.
# (sshd takes the first SetEnv line only, so all variables go on one line; values with blanks
# or quotes cannot be expressed there and are left out.)
session_env=$(env | grep -E '^(PATH|LD_LIBRARY_PATH|LIBRARY_PATH|OPAL_PREFIX|PYTHONPATH|(CUDA|CUDNN|NCCL|NVIDIA|OMPI|OPAL|UCX|HPCX|HOROVOD|TF)_[A-Z0-9_]*)=' \
    | grep -Ev '[[:space:]"]' | sort | tr '\n' ' ')

# Server side (workers): a non-root sshd can only log in its own user, which is all MPI needs.
# StrictModes no: the mounted key files belong to root with group read (the Secret volume).
cat > "${root}${home}/.sshd_config" <<CONF
Port ${port}
PidFile ${home}/sshd.pid
HostKey ${home}/.ssh/id_rsa
AuthorizedKeysFile ${home}/.ssh/authorized_keys
StrictModes no
AllowUsers ${user}
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
SetEnv ${session_env}
CONF
chown "${user}:" "${root}${home}/.sshd_config"
