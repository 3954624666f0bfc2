#!/usr/bin/env bash
# A single-node SLURM cluster on this machine for the SLURM tests (tests/functional/test_slurm.py).
# Run as root on Debian 12; .ci/run calls it. Idempotent: rewrites the configuration, restarts the daemons it
# finds running (by their pid files) and waits until the node is idle.
#
# Installs slurmctld, slurmd, slurm-client, munge (and, unless UDOCKER_CI_SKIP_APT=1, openmpi-bin and
# libopenmpi-dev for the MPI tests), writes /etc/slurm/slurm.conf for one node named `hostname -s`, then
# starts munged, slurmctld and slurmd directly as daemons (no systemd on CI machines).
#
# slurm.conf choices (see the comments in the file it writes):
#   - the node declares CPUS (default 16) CPUs whatever the hardware has (SlurmdParameters=config_overrides),
#     so that a 16-task job array runs all at once on a 2-core CI machine;
#   - proctrack/linuxproc and task/none: no cgroups (CI machines have a v1/v2 hybrid, or none writable);
#   - no accounting, no memory enforcement (CR_Core), MpiDefault=none (srun --mpi=pmix|pmi2 picks one).
#
# Environment: SLURM_SETUP_CPUS (default 16), SLURM_SETUP_TIMEOUT (seconds to wait for the node, default 60).
set -euo pipefail

CPUS=${SLURM_SETUP_CPUS:-16}
TIMEOUT=${SLURM_SETUP_TIMEOUT:-60}
NODE=$(hostname -s)
CONF=/etc/slurm/slurm.conf
STATE=/var/lib/slurm
LOGS=/var/log/slurm
RUN=/run/slurm

say() { printf '=== slurm: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "slurm_setup: run me as root" >&2
    exit 1
fi

if [ "${UDOCKER_CI_SKIP_APT:-}" != 1 ]; then
    say "installing slurmctld, slurmd, slurm-client, munge, openmpi"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge openmpi-bin \
        libopenmpi-dev >/dev/null
fi

# Stop what an earlier run started: the pid files name the daemons (never kill by name).
stop() {
    local pidfile=$1 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
    fi
    rm -f "$pidfile"
}
stop "$RUN/slurmd.pid"
stop "$RUN/slurmctld.pid"
stop /run/munge/munged.pid

say "munge"
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
munge -n | unmunge >/dev/null

say "$CONF for node $NODE ($CPUS CPUs declared, $(nproc) present)"
install -d -o slurm -g slurm -m 755 "$STATE" "$STATE/slurmctld" "$LOGS" "$RUN"
install -d -m 755 "$STATE/slurmd"
# The controller's state is kept, so job ids keep growing across restarts: a PMIx step leaves files named after
# its id (slurmd's spool stepd.slurm.pmix.JOB.STEP and pmix.JOB.STEP/, /tmp/spmix_appdir_UID_JOB.STEP) when it
# fails, and a later step of the same id would fail on them ("Address already in use", "File exists"). Those
# of earlier runs are removed here.
rm -rf "${STATE:?}/slurmd/"stepd.slurm.pmix.* "${STATE:?}/slurmd/"pmix.* /tmp/spmix_appdir_*
cat >"$CONF" <<EOF
# Written by udocker's utils/slurm_setup.sh: one node, for tests. Rerunning the script rewrites it.
ClusterName=udocker-ci
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: the CI machine's cgroup hierarchy is a v1/v2 hybrid that SLURM's cgroup plugins refuse.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# srun --mpi=pmix (pmix_v4) or --mpi=pmi2 choose per step.
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# The node declares more CPUs than it has, so that many small test jobs run at once.
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
chmod 644 "$CONF"

say "slurmctld, slurmd"
/usr/sbin/slurmctld
/usr/sbin/slurmd

deadline=$((SECONDS + TIMEOUT))
state=
while [ $SECONDS -lt $deadline ]; do
    state=$(sinfo --noheader --nodes="$NODE" --format=%t 2>/dev/null || true)
    case "$state" in
        idle|mix|alloc) break ;;
        down*|drain*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
done
case "$state" in
    idle|mix|alloc)
        sinfo
        say "node $NODE is $state" ;;
    *)
        echo "slurm_setup: node $NODE is not idle after ${TIMEOUT}s (state: '${state:-none}')" >&2
        sinfo >&2 || true
        for log in "$LOGS/slurmctld.log" "$LOGS/slurmd.log"; do
            echo "--- $log" >&2
            tail -n 40 "$log" >&2 || true
        done
        exit 1 ;;
esac
