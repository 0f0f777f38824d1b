#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, to try hydra/launcher=slurm on a workstation
# and to run the SLURM tests (tests/test_slurm.py). Debian/Ubuntu, as root:
#
#   scripts/slurm_local_cluster.sh install   # apt-get install slurmctld slurmd slurm-client munge
#   scripts/slurm_local_cluster.sh start     # munge key, slurm.conf for this host, start the daemons
#   scripts/slurm_local_cluster.sh status    # sinfo
#   scripts/slurm_local_cluster.sh stop
#
# `start` is idempotent: it writes /etc/slurm/slurm.conf (partition "debug", this host with its
# CPUs and memory; proctrack/linuxproc and task/none, so no cgroups or systemd are needed) and
# (re)starts munged, slurmctld and slurmd, then waits until the node is idle.
set -euo pipefail

SLURM_CONF=/etc/slurm/slurm.conf
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm

need_root() {
    if [[ $(id -u) != 0 ]]; then
        echo "error: $0 $1 needs root (it writes /etc/slurm and starts daemons)" >&2
        exit 1
    fi
}

install() {
    need_root install
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))  # 10% for the system
    mkdir -p /etc/slurm "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR"
    cat > "$SLURM_CONF" <<EOF
# Written by classic-cnns scripts/slurm_local_cluster.sh: one node, this machine.
ClusterName=classic-cnns
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if ! munge -n >/dev/null 2>&1 </dev/null; then
        runuser -u munge -- /usr/sbin/munged
    fi
}

stop() {
    need_root stop
    local pid
    for daemon in slurmd slurmctld; do
        pid=$(cat "/run/$daemon.pid" 2>/dev/null || true)
        if [[ -n $pid ]] && kill "$pid" 2>/dev/null; then
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
        rm -f "/run/$daemon.pid"
    done
}

start() {
    need_root start
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        echo "error: SLURM or munge is not installed: run $0 install first" >&2
        exit 1
    fi
    stop
    write_config
    start_munge
    slurmctld
    slurmd
    for _ in $(seq 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
            sinfo
            return 0
        fi
        sleep 0.5
    done
    echo "error: the SLURM node did not become idle in 30 s; see $LOG_DIR/slurmctld.log and slurmd.log" >&2
    sinfo -R >&2 || true
    exit 1
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
