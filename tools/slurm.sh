#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for darch's tests and CI.
#
#   tools/slurm.sh start    install SLURM if missing, write a fresh config, start the daemons,
#                           wait until the node is idle
#   tools/slurm.sh stop     cancel this cluster's jobs, stop the daemons this script started (by pid)
#   tools/slurm.sh status   say which daemons run and what sinfo reports; exit 0 only when all is up
#
# It installs Debian's SLURM 22.05 (slurmctld, slurmd, slurm-client, munge; not the slurm-wlm
# metapackage), starts munged as the munge user, then slurmctld and slurmd as root, with no systemd.
# The node declares CPUs=8 and Gres=gpu:4 (SlurmdParameters=config_overrides, four fake GPU character
# devices), so that several GPU jobs run at once on a 2-core machine.  Partitions: debug (default),
# plus GPU-shared and GPU, named like PSC Bridges-2's, so that the site profiles can submit here.
#
# Everything lives in one state folder of its own, wiped at every start (an old DRAIN state would
# otherwise survive).  Environment:
#   DARCH_SLURM_DIR      state folder                      (default /tmp/darch-slurm)
#   DARCH_SLURM_TIMEOUT  seconds to wait for an idle node  (default 60)
#   DARCH_SLURM_CPUS     CPUs the node declares            (default 8)
#   DARCH_SLURM_GPUS     fake GPUs the node declares       (default 4)
#   DARCH_SLURM_GPU_TYPE their type, as in --gpus=TYPE:N   (default v100-32, Bridges-2's; plain
#                        --gres=gpu:N and --gpus=N requests match it too)
#
# Client commands (sinfo, sbatch, ...) find the config through /etc/slurm/slurm.conf, which start
# makes a symbolic link to the state folder's slurm.conf when that path is free or already ours; when
# another slurm.conf is there it is left alone and you must `export SLURM_CONF=<state>/slurm.conf`.
set -euo pipefail

STATE="${DARCH_SLURM_DIR:-/tmp/darch-slurm}"
TIMEOUT="${DARCH_SLURM_TIMEOUT:-60}"
NODE_CPUS="${DARCH_SLURM_CPUS:-8}"
NODE_GPUS="${DARCH_SLURM_GPUS:-4}"
GPU_TYPE="${DARCH_SLURM_GPU_TYPE:-v100-32}"
CONF="$STATE/slurm.conf"
RUN="$STATE/run"
LOG="$STATE/log"
ETC_CONF=/etc/slurm/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { printf 'slurm.sh: %s\n' "$*"; }
die() { printf 'slurm.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    cat >&2 <<EOF
usage: $0 start|stop|status
  start   install SLURM if missing, write a fresh config in $STATE, start munged, slurmctld, slurmd
  stop    cancel this cluster's jobs and stop the daemons that start launched (by pid)
  status  report the daemons and sinfo; exit 0 only when the controller answers
EOF
    exit 2
}

# --- installation ---------------------------------------------------------------------------------

install_if_missing() {
    local missing=()
    command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
    command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
    command -v sinfo >/dev/null 2>&1 || missing+=(slurm-client)
    [[ -x /usr/sbin/munged ]] || missing+=(munge)
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "missing ${missing[*]} and not root; install them with:
  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${PACKAGES[*]}"
    say "installing ${PACKAGES[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

# --- pid files ------------------------------------------------------------------------------------

# alive NAME: the pid recorded for NAME, when that process still runs the expected program.
alive() {
    local name=$1 pidfile="$RUN/$1.pid" pid comm
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$name" ]] || return 1
    printf '%s\n' "$pid"
}

# stop_daemon NAME: TERM the recorded pid, wait, KILL if it lingers; forget the pid file.
stop_daemon() {
    local name=$1 pid i
    if pid=$(alive "$name"); then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "stopped $name (pid $pid)"
    fi
    rm -f "$RUN/$name.pid"
}

# --- configuration --------------------------------------------------------------------------------

write_config() {
    local host mem_kb real_mb i gpu_files
    host=$(hostname -s)
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    real_mb=$((mem_kb * 8 / 10 / 1024))

    mkdir -p "$STATE/gpu"
    gpu_files=()
    for ((i = 0; i < NODE_GPUS; i++)); do
        mknod -m 666 "$STATE/gpu/nvidia$i" c 1 3
        gpu_files+=("$STATE/gpu/nvidia$i")
    done

    cat >"$CONF" <<EOF
# Written by tools/slurm.sh; wiped and rewritten at every start.
ClusterName=darch
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=5
OverTimeLimit=0
# Declare more CPUs and GPUs than this machine has, so several GPU jobs run at once.
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${NODE_CPUS} RealMemory=${real_mb} Gres=gpu:${GPU_TYPE}:${NODE_GPUS} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
# Named like PSC Bridges-2's GPU partitions, so that the site profiles submit here too.
PartitionName=GPU-shared Nodes=${host} MaxTime=INFINITE State=UP
PartitionName=GPU Nodes=${host} MaxTime=INFINITE State=UP
EOF

    # A gres line needs File= (Count= alone leaves the node with 0 GPUs, drained).
    {
        echo "# Written by tools/slurm.sh: fake GPUs (character devices like /dev/null)."
        echo "AutoDetect=off"
        for f in "${gpu_files[@]}"; do
            echo "NodeName=${host} Name=gpu Type=${GPU_TYPE} File=$f"
        done
    } >"$STATE/gres.conf"
}

link_etc_conf() {
    mkdir -p /etc/slurm
    if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$CONF" ]]; then
        return 0
    fi
    if [[ -e $ETC_CONF || -L $ETC_CONF ]]; then
        say "$ETC_CONF exists and is not ours; client commands need: export SLURM_CONF=$CONF"
        return 0
    fi
    ln -s "$CONF" "$ETC_CONF"
}

unlink_etc_conf() {
    if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$CONF" ]]; then
        rm -f "$ETC_CONF"
    fi
}

# --- daemons --------------------------------------------------------------------------------------

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munged() {
    if munge_works; then
        say "munged already answers (not started by this script; it will not stop it)"
        return 0
    fi
    mkdir -p /run/munge
    chown munge:munge /run/munge
    chmod 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    local i
    for ((i = 0; i < 50; i++)); do
        munge_works && break
        sleep 0.1
    done
    munge_works || die "munged did not start; see /var/log/munge/munged.log"
    cp /run/munge/munged.pid "$RUN/munged.pid"
}

show_logs() {
    local f
    for f in "$LOG/slurmctld.log" "$LOG/slurmd.log"; do
        echo "----- last lines of $f -----" >&2
        tail -n 25 "$f" >&2 2>/dev/null || echo "(no log)" >&2
    done
    echo "----- sinfo -R -----" >&2
    SLURM_CONF="$CONF" sinfo -R >&2 2>&1 || true
}

wait_idle() {
    local deadline states
    deadline=$((SECONDS + TIMEOUT))
    while ((SECONDS < deadline)); do
        states=$(SLURM_CONF="$CONF" sinfo -h -o %T 2>/dev/null | sort -u | tr '\n' ' ') || states=""
        if [[ $states == "idle " ]]; then
            return 0
        fi
        if [[ $states == *drain* || $states == *down* ]] && ((SECONDS > deadline - TIMEOUT + 10)); then
            break
        fi
        sleep 0.25
    done
    {
        echo "slurm.sh: error: the node is not idle after ${TIMEOUT}s (sinfo says: '${states:-no answer}')."
        echo "The daemons' logs follow; the state folder is $STATE."
    } >&2
    show_logs
    return 1
}

do_start() {
    [[ $(id -u) -eq 0 ]] || die "start must run as root (it starts slurmd and munged)"
    install_if_missing
    # Leftovers of an earlier start of ours go first; then a clean state.
    if [[ -d $RUN ]]; then
        do_stop quiet
    fi
    rm -rf "$STATE"
    mkdir -p "$STATE/state" "$STATE/spool" "$RUN" "$LOG"
    chmod 0755 "$STATE"
    write_config
    link_etc_conf

    start_munged
    # On failure: show the logs, stop what this start launched, exit non-zero.
    slurmctld -f "$CONF" || { show_logs; do_stop quiet; die "slurmctld failed to start (see above)"; }
    slurmd -f "$CONF" || { show_logs; do_stop quiet; die "slurmd failed to start (see above)"; }
    if ! wait_idle; then
        do_stop quiet
        exit 1
    fi
    say "SLURM is up in $STATE (node $(hostname -s): ${NODE_CPUS} CPUs, ${NODE_GPUS} fake ${GPU_TYPE} GPUs)"
    SLURM_CONF="$CONF" sinfo
}

do_stop() {
    local quiet=${1:-} i
    if alive slurmctld >/dev/null; then
        # This cluster's jobs go first, so that no slurmstepd or dask worker outlives the daemons.
        local jobs
        jobs=$(SLURM_CONF="$CONF" squeue -h -o %A 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086  # one job id per word
            SLURM_CONF="$CONF" scancel $jobs 2>/dev/null || true
        fi
        for ((i = 0; i < 100; i++)); do
            [[ -z $(SLURM_CONF="$CONF" squeue -h -o %A 2>/dev/null) ]] && break
            sleep 0.1
        done
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    unlink_etc_conf
    [[ -n $quiet ]] || say "stopped"
}

do_status() {
    local ok=0 name pid
    for name in munged slurmctld slurmd; do
        if pid=$(alive "$name"); then
            say "$name running (pid $pid)"
        elif [[ $name == munged ]] && munge_works; then
            say "munged answering (not started by this script)"
        else
            say "$name not running"
            ok=1
        fi
    done
    if [[ -f $CONF ]] && SLURM_CONF="$CONF" sinfo 2>/dev/null; then
        :
    else
        say "the controller does not answer"
        ok=1
    fi
    return "$ok"
}

case "${1:-}" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    *) usage ;;
esac
