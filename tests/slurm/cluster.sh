#!/usr/bin/env bash
# A real single-node SLURM cluster for the tests and CI: munged + slurmctld + slurmd on this host,
# each with a private configuration and state directory, so it never touches /etc/slurm,
# /etc/munge, the system's daemons or another engineer's cluster on the same machine.
#
# Usage:  tests/slurm/cluster.sh start|stop|status|env [DIR]
#
#   DIR (or $GENSIM_SLURM_DIR; default /tmp/gensim-slurm-$(id -u)) holds everything: slurm.conf,
#   the munge key and socket, the daemons' state, spool, logs and pid files, and env.sh.
#
#   start   write the configuration, start the three daemons (each recorded by pid in
#           DIR/pids/), wait until `sinfo` shows the node idle, then print the environment
#           clients need (`export SLURM_CONF=...`; also written to DIR/env.sh). Idempotent:
#           if the daemons this script started in DIR are alive and the node answers, it only
#           prints the environment. A stale DIR (dead daemons, leftover state) is cleaned first.
#   stop    cancel the cluster's jobs, then stop the daemons this script started, by their
#           recorded pids only (never by name); TERM, then KILL after a grace period.
#   status  say which recorded daemons are alive and show `sinfo`/`squeue`; exit 1 if down.
#   env     print the client environment (exit 1 if the cluster is not running).
#
# Environment knobs:
#   GENSIM_SLURM_PARTITION  partition name (default: gensim)
#   GENSIM_SLURM_CPUS       CPUs the node advertises (default: `nproc`; may exceed it to
#                           oversubscribe: SlurmdParameters=config_overrides)
#   GENSIM_SLURM_TIMEOUT    seconds to wait for the node to become idle (default: 60)
#
# Requirements: Debian/Ubuntu `slurm-wlm` and `munge` (apt-get install -y slurm-wlm munge), run
# as root (the daemons run as root: SlurmUser=root; ProctrackType=proctrack/linuxproc and
# TaskPlugin=task/none need no cgroups). Accounting is off (AccountingStorageType=
# accounting_storage/none, no slurmdbd), so `sacct` does not work here: check jobs with
# `squeue` and `scontrol show job <id>` (kept MinJobAge seconds after the job ends).
set -euo pipefail
# Debian installs the daemons in /usr/sbin, which a non-login PATH may lack.
PATH="$PATH:/usr/sbin:/usr/local/sbin"

die() { echo "cluster.sh: $*" >&2; exit 1; }

cmd="${1:-}"
dir="${2:-${GENSIM_SLURM_DIR:-/tmp/gensim-slurm-$(id -u)}}"
partition="${GENSIM_SLURM_PARTITION:-gensim}"
timeout_s="${GENSIM_SLURM_TIMEOUT:-60}"
daemons=(munged slurmctld slurmd)

[[ "$dir" = /* ]] || dir="$PWD/$dir"
conf="$dir/slurm.conf"

# ---- pid bookkeeping: a pid counts as ours only if it is alive and its command line names our
# ---- directory (so a recycled pid is never signalled).
pid_of() {  # name -> pid recorded by this script, or nothing
    if [[ -f "$dir/pids/$1" ]]; then cat "$dir/pids/$1"; fi
}
ours() {  # name -> success if the recorded process is alive and started by us for this dir
    local pid; pid="$(pid_of "$1")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$dir/" || return 1
}
all_up() { local d; for d in "${daemons[@]}"; do ours "$d" || return 1; done; }

client_env() { echo "export SLURM_CONF=$conf"; }

node_state() { SLURM_CONF="$conf" sinfo -h -N -p "$partition" -o '%T' 2>/dev/null | head -n1 || true; }

log_tails() {
    local f
    for f in "$dir"/log/*.log; do
        [[ -f "$f" ]] || continue
        echo "----- last lines of $f -----" >&2
        tail -n 25 "$f" >&2 || true
    done
}

stop_pid() {  # name: TERM, wait up to 10 s, then KILL; only our recorded process
    local name="$1" pid i
    pid="$(pid_of "$name")"
    if ours "$name"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            ours "$name" || break
            sleep 0.1
        done
        if ours "$name"; then
            echo "cluster.sh: $name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do ours "$name" || break; sleep 0.1; done
        fi
    fi
    rm -f "$dir/pids/$name"
}

cancel_jobs() {  # cancel this cluster's jobs so no slurmstepd outlives slurmd (bounded wait)
    ours slurmctld || return 0
    local ids i
    ids="$(SLURM_CONF="$conf" squeue -h -o '%A' 2>/dev/null || true)"
    [[ -n "$ids" ]] || return 0
    # shellcheck disable=SC2086
    SLURM_CONF="$conf" scancel $ids 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -z "$(SLURM_CONF="$conf" squeue -h -t R,CG -o '%A' 2>/dev/null || true)" ]] && return 0
        sleep 0.2
    done
    echo "cluster.sh: jobs still completing after 20 s: $(SLURM_CONF="$conf" squeue -h 2>/dev/null || true)" >&2
}

do_stop() {
    cancel_jobs
    stop_pid slurmd
    stop_pid slurmctld
    stop_pid munged
}

free_ports() {  # two free TCP ports, for slurmctld and slurmd (clusters on one host must differ)
    python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

write_config() {
    local host cpus mem_mb ctld_port slurmd_port name
    host="$(hostname -s)"
    cpus="${GENSIM_SLURM_CPUS:-$(nproc)}"
    # 90 % of this machine's memory, in MB, so that jobs asking --mem fit and the node is not
    # drained for advertising more than it has.
    mem_mb="$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)"
    read -r ctld_port slurmd_port < <(free_ports)
    # A cluster name per directory: several clusters may run on one host at once.
    name="gensim$(printf '%s' "$dir" | cksum | cut -d' ' -f1)"
    name="${name:0:20}"
    cat > "$conf" <<EOF
# Written by tests/slurm/cluster.sh: a single-node test cluster, private to $dir.
ClusterName=$name
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$dir/plugstack.conf
MailProg=/bin/true
# No cgroups needed: processes are tracked through /proc, tasks are not confined.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# The node may advertise more CPUs than nproc (GENSIM_SLURM_CPUS) without being drained.
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=30
SlurmctldTimeout=30
MessageTimeout=10
KillWait=5
InactiveLimit=0
# No accounting daemon: jobs are checked with squeue and "scontrol show job", which know a
# finished job for MinJobAge seconds (long enough for a test to read its final state).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=300
NodeName=$host NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$partition Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    : > "$dir/plugstack.conf"
}

start_daemon() {  # name, command...: start in the foreground mode, detached, and record its pid
    local name="$1" pid i; shift
    setsid "$@" < /dev/null > "$dir/log/$name.out" 2>&1 &
    pid=$!
    echo "$pid" > "$dir/pids/$name"
    # Until the child has exec'ed the daemon its command line is this script's, which `ours`
    # would not recognize ("exited while waiting", seen once in CI): wait for the exec (5 s at
    # most; a daemon that dies at once is then reported by wait_for).
    for ((i = 0; i < 50; i++)); do
        tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null | grep -qF -- "$dir/" && break
        sleep 0.1
    done
}

wait_for() {  # description, seconds, test command...
    local what="$1" secs="$2"; shift 2
    local deadline=$((SECONDS + secs)) d
    until "$@"; do
        for d in "${daemons[@]}"; do
            if [[ -f "$dir/pids/$d" ]] && ! ours "$d"; then
                echo "cluster.sh: $d exited while waiting for $what" >&2
                log_tails; cat "$dir/log/$d.out" >&2 2>/dev/null || true
                do_stop; exit 1
            fi
        done
        if ((SECONDS >= deadline)); then
            echo "cluster.sh: timed out after ${secs} s waiting for $what (node state: '$(node_state)')" >&2
            log_tails
            do_stop; exit 1
        fi
        sleep 0.5
    done
}

do_start() {
    for b in munged slurmctld slurmd sinfo squeue scontrol sbatch; do
        command -v "$b" > /dev/null || die "'$b' not found: install SLURM and munge first" \
            "(apt-get install -y slurm-wlm munge; they are in /usr/sbin)"
    done
    [[ "$(id -u)" = 0 ]] || die "the test cluster runs its daemons as root (SlurmUser=root); run as root"
    # munge's socket path must fit in sockaddr_un (108 bytes).
    (( ${#dir} + 20 < 108 )) || die "directory path too long for a unix socket: $dir"

    if all_up && [[ "$(node_state)" =~ ^(idle|mixed|allocated) ]]; then
        client_env; return 0   # already running: idempotent
    fi
    # Stale or partial state (crashed daemons, a previous run's files): stop what is still ours,
    # then start from a clean directory. Only files below DIR are removed.
    do_stop
    rm -rf "$dir/state" "$dir/spool" "$dir/run" "$dir/log" "$dir/pids" "$dir/munge/munge.socket"* \
        "$dir/munge/munged.pid" "$dir/env.sh"
    mkdir -p "$dir/state" "$dir/spool" "$dir/run" "$dir/log" "$dir/pids" "$dir/munge"
    chmod 711 "$dir/munge"
    if [[ ! -s "$dir/munge/munge.key" ]]; then
        if command -v mungekey > /dev/null; then
            mungekey --create --keyfile="$dir/munge/munge.key" > /dev/null
        else
            dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
        fi
    fi
    chmod 600 "$dir/munge/munge.key"
    write_config

    # --force: munged refuses to run as root or with this private layout without it.
    start_daemon munged munged --foreground --force \
        --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/seed"
    wait_for "munged's socket" 15 test -S "$dir/munge/munge.socket"
    # -D: stay in the foreground so the recorded pid is the daemon's; -c: no job recovery from a
    # previous run's state; -i: ignore stale state files.
    start_daemon slurmctld slurmctld -D -c -i -f "$conf"
    start_daemon slurmd slurmd -D -N "$(hostname -s)" -f "$conf"
    wait_for "the node to be idle in partition $partition" "$timeout_s" \
        bash -c "[[ \"\$(SLURM_CONF='$conf' sinfo -h -N -p '$partition' -o '%T' 2>/dev/null)\" == idle ]]"
    client_env > "$dir/env.sh"
    client_env
}

do_status() {
    local d up=0
    for d in "${daemons[@]}"; do
        if ours "$d"; then echo "$d: running (pid $(pid_of "$d"))"; else echo "$d: not running"; up=1; fi
    done
    if ((up == 0)); then
        SLURM_CONF="$conf" sinfo || true
        SLURM_CONF="$conf" squeue || true
    fi
    return $up
}

case "$cmd" in
    start) mkdir -p "$dir"; do_start ;;
    stop) [[ -d "$dir" ]] && do_stop; echo "cluster.sh: stopped ($dir)" ;;
    status) do_status ;;
    env) all_up || die "not running ($dir)"; client_env ;;
    *) echo "usage: $0 start|stop|status|env [DIR]" >&2; exit 2 ;;
esac
