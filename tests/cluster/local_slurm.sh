#!/usr/bin/env bash
# The SLURM profile tested for real: a one-node SLURM cluster on this machine, the smoke tier run
# through it with the project's profile, checked against a local run.
#
#   SGBENCH_DATA=../shared/data tests/cluster/local_slurm.sh [WORKDIR]
#
# As root on Debian 12 (tests/test_cluster.py runs it in CI; it skips elsewhere):
#  1. installs Debian's slurmctld slurmd slurm-client munge, unless they are there;
#  2. starts munged, slurmctld and slurmd with a generated /etc/slurm/slurm.conf (removed again at
#     the end; an existing one that it did not write stops it), every other file of theirs (state,
#     socket, pid files, logs) under WORKDIR/cluster; waits until the node is idle;
#  3. runs the smoke tier with the README's cluster command plus the test cluster's overlay profile,
#       snakemake --profile workflows/profiles/slurm --profile tests/cluster/profile --config tier=smoke
#     in WORKDIR/slurm, and checks that every job was submitted with sbatch and completed;
#  4. runs tests/cluster/failing/Snakefile the same way: its job fails, and the workflow must fail
#     and name the job's logs;
#  5. runs the smoke tier locally (snakemake --cores N) in WORKDIR/local and checks that the SLURM
#     run's numbers are the same (tests/cluster/compare_runs.py). The three runs go at once.
#  6. always (trap: also on failure or interrupt) stops its snakemake runs, cancels its jobs and
#     stops the daemons it started, by PID, then removes their pid files, munged's run directory
#     (/run/sgbench-munge.*) and /etc/slurm/slurm.conf.
# WORKDIR (default: a new temporary directory) must not exist or be empty; it keeps every log and
# output. Exit status 0 when every check passed. Environment: SGBENCH_DATA (the data root,
# required), PYTHON (the interpreter with sgbench and snakemake; default: python3 on PATH).
# shellcheck disable=SC2015  # `A && B || die`: die when either check fails
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"
unset SLURM_CONF   # every SLURM command here reads /etc/slurm/slurm.conf, which this script writes
T0=$SECONDS
say() { printf '[local_slurm %3ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }
trap 'say "ERROR: line $LINENO failed: $BASH_COMMAND" >&2' ERR

DAEMONS=()   # "name pid", in start order; written to $C/daemons for the test to check
declare -A RUN_PID=() RUN_T0=()   # snakemake runs in the background, by name
CONF=/etc/slurm/slurm.conf   # where the job's own srun looks (see below)
MARK="# One-node test cluster written by tests/cluster/local_slurm.sh"
WROTE_CONF=
MUNGE_RUN=   # munged's socket, pid and seed files
POLICY=/usr/sbin/policy-rc.d ADDED_POLICY=   # set while apt-get runs

stop_pid() {  # stop_pid NAME PID: SIGTERM, up to 15 s, then SIGKILL
    local name=$1 pid=$2 i
    kill -0 "$pid" 2>/dev/null || { say "$name (pid $pid) had already exited"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored SIGTERM for 15 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    say "stopped $name (pid $pid)"
}

stop_runs() {  # the snakemake runs still going (after a failure or an interrupt), with their process groups
    local name i left
    [ ${#RUN_PID[@]} -gt 0 ] || return 0
    for name in "${!RUN_PID[@]}"; do kill -TERM -- "-${RUN_PID[$name]}" 2>/dev/null; done
    for i in $(seq 50); do   # 5 s; a SLURM run does not stop on SIGTERM: its jobs are cancelled below
        left=; for name in "${!RUN_PID[@]}"; do kill -0 "${RUN_PID[$name]}" 2>/dev/null && left=1; done
        [ -z "$left" ] && break; sleep 0.1
    done
    for name in "${!RUN_PID[@]}"; do
        kill -KILL -- "-${RUN_PID[$name]}" 2>/dev/null; wait "${RUN_PID[$name]}" 2>/dev/null
        say "stopped snakemake $name (pid ${RUN_PID[$name]})"
    done
}

our_stepds() {  # job step daemons that were not running before this script started slurmd
    local pid
    for pid in $(pgrep -x slurmstepd || true); do
        case "${STEPD_BEFORE:-}" in *" $pid "*) ;; *) echo "$pid" ;; esac
    done
}

work_procs() {  # processes working in WORKDIR: what is left of a job or a run
    local proc
    for proc in /proc/[0-9]*; do
        [ "${proc#/proc/}" = $$ ] && continue
        case "$(readlink "$proc/cwd" 2>/dev/null)" in "$WORK" | "$WORK"/*) echo "${proc#/proc/}" ;; esac
    done
}

cleanup() {
    local rc=$? i pid name
    trap - EXIT INT TERM ERR
    set +e
    stop_runs
    if [ ${#DAEMONS[@]} -gt 0 ]; then
        say "stopping the cluster"
        if kill -0 "${CTLD_PID:-0}" 2>/dev/null; then
            squeue -h -t all -o '%i|%j|%T|%C|%m|%b|%N' >"$C/jobs-at-exit.txt" 2>/dev/null
            scancel --quiet --user=root 2>/dev/null
            for i in $(seq 30); do   # up to 15 s for the cancelled jobs and their step daemons to end
                [ -z "$(squeue -h -t running,completing 2>/dev/null)" ] && [ -z "$(our_stepds)" ] && break
                sleep 0.5
            done
        fi
        for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do   # slurmd first, munged last
            read -r name pid <<<"${DAEMONS[i]}"; stop_pid "$name" "$pid"
        done
        # Job step daemons that slurmd started (not running before this script) outlive slurmd.
        for pid in $(our_stepds); do stop_pid slurmstepd "$pid"; done
        for i in $(seq 20); do [ -z "$(work_procs)" ] && break; sleep 0.5; done   # a cancelled job's last processes
        for pid in $(work_procs); do stop_pid "$(cat "/proc/$pid/comm" 2>/dev/null) (left by a job)" "$pid"; done
        rm -f "$C"/*.pid
    fi
    if [ -n "$ADDED_POLICY" ]; then rm -f "$POLICY"; fi
    if [ -n "$MUNGE_RUN" ]; then cp "$MUNGE_RUN/munged.log" "$C/log/" 2>/dev/null; rm -rf "$MUNGE_RUN"; fi
    if [ -n "$WROTE_CONF" ] && [ "$(head -1 "$CONF" 2>/dev/null)" = "$MARK" ]; then
        rm -f "$CONF" && say "removed $CONF"
    fi
    say "done (exit status $rc, $((SECONDS - T0)) s in all${WORK:+; logs in $WORK})"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- preflight --------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root: this script installs Debian packages and starts SLURM daemons"
# shellcheck disable=SC1091
. /etc/os-release
[ "${ID:-}" = debian ] && [ "${VERSION_ID:-}" = 12 ] \
    || die "needs Debian 12 (its slurm-wlm 22.05 packages); this is ${PRETTY_NAME:-an unknown OS}"
[ -n "${SGBENCH_DATA:-}" ] || die "set SGBENCH_DATA to the data root (MNIST), e.g. ../shared/data"
[ -d "$SGBENCH_DATA" ] || die "SGBENCH_DATA=$SGBENCH_DATA is not a directory"
SGBENCH_DATA="$(cd "$SGBENCH_DATA" && pwd)"   # the runs work in other directories
"$PY" -c "import sgbench, snakemake, snakemake_executor_plugin_slurm" \
    || die "$PY cannot import sgbench, snakemake and the SLURM plugin: pip install -e . first (or set PYTHON)"
command -v sgbench >/dev/null || die "sgbench is not on PATH (activate the virtual environment)"
for port in 6817 6818; do  # slurmctld, slurmd
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is in use: another SLURM runs here; stop it first (this script starts its own)"
    fi
done

WORK="${1:-$(mktemp -d /tmp/sgbench-slurm.XXXXXX)}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
[ -z "$(ls -A "$WORK")" ] || die "$WORK is not empty"
C="$WORK/cluster"            # the cluster's files
mkdir -p "$C/log" "$C/ctld" "$C/spool"
say "work directory $WORK"

launch() {  # launch NAME ARGS...: snakemake in $WORK/NAME, in the background; output in $WORK/NAME.out
    local name=$1; shift
    mkdir -p "$WORK/$name"
    # In a process group of its own (setsid execs: $! is snakemake's PID and the group's), so that
    # stopping it also stops the jobs it runs itself.
    SGBENCH_CACHE="$WORK/$name/cache" setsid "$PY" -m snakemake --directory "$WORK/$name" "$@" >"$WORK/$name.out" 2>&1 &
    RUN_PID[$name]=$!
    RUN_T0[$name]=$(date +%s)
    say "snakemake $name: started (pid $!, output $WORK/$name.out)"
}
finish() {  # finish NAME: wait for it; its exit status goes to $WORK/NAME.rc
    local name=$1 rc=0
    wait "${RUN_PID[$name]}" || rc=$?
    unset "RUN_PID[$name]"
    echo "$rc" >"$WORK/$name.rc"
    # its run time: up to its last output (the runs end in any order; they are waited for in turn)
    say "snakemake $name: exit status $rc, ran $(($(stat -c %Y "$WORK/$name.out") - RUN_T0[$name])) s"
}
# The local reference run needs no cluster: it starts now, beside everything that follows.
launch local -s "$ROOT/Snakefile" --cores "$(nproc)" --config tier=smoke

# --- 1. packages ------------------------------------------------------------------------------
if command -v munged >/dev/null && command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null; then
    say "slurm and munge already installed: $(slurmctld -V)"
else
    say "installing slurmctld slurmd slurm-client munge (apt-get)"
    # No service may start at install time (policy-rc.d exit 101): the daemons are started below,
    # by this script, so that it can stop them all.
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY" && chmod 755 "$POLICY" && ADDED_POLICY=1
    fi
    apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                        slurmctld slurmd slurm-client munge >>"$C/log/apt.log" 2>&1; }
    # without package lists (a fresh machine), fetch them first
    apt_install || { apt-get update -q >>"$C/log/apt.log" 2>&1 && apt_install; } \
        || { tail -20 "$C/log/apt.log" >&2; die "apt-get install failed (log: $C/log/apt.log)"; }
    rm -f "$POLICY"; ADDED_POLICY=
    say "installed: $(slurmctld -V)"
fi
[ -r /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (the munge package creates it)"

# --- 2. daemons -------------------------------------------------------------------------------
start() {  # start NAME LOGFILE COMMAND...: in the background, recording its PID
    local name=$1 log=$2; shift 2
    "$@" >"$log" 2>&1 &
    DAEMONS+=("$name $!")
    printf '%s %s\n' "$name" "$!" >>"$C/daemons"
    say "started $name (pid $!)"
}
alive() {  # alive NAME PID: or fail with the end of its log
    kill -0 "$2" 2>/dev/null || { tail -20 "$C/log/$1.out" >&2; die "$1 exited (log: $C/log/$1.out)"; }
}

STEPD_BEFORE=" $(pgrep -x slurmstepd | tr '\n' ' ' || true) "   # job step daemons not ours
# munged runs as user munge (the owner of /etc/munge/munge.key), with its own socket in a directory
# of its own under /run (WORKDIR may be private to root; munged wants every parent directory
# traversable). setpriv execs, so the PID recorded is munged's own.
MUNGE_RUN="$(mktemp -d /run/sgbench-munge.XXXXXX)"
echo "$MUNGE_RUN" >"$C/munge-run-dir"
chown munge:munge "$MUNGE_RUN"
chmod 755 "$MUNGE_RUN"
SOCK="$MUNGE_RUN/munge.socket"
start munged "$C/log/munged.out" setpriv --reuid=munge --regid=munge --init-groups \
    munged --foreground --socket="$SOCK" --pid-file="$MUNGE_RUN/munged.pid" \
    --log-file="$MUNGE_RUN/munged.log" --seed-file="$MUNGE_RUN/munged.seed"
MUNGED_PID=$!
for i in $(seq 50); do
    munge -n -S "$SOCK" 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1 && break
    alive munged "$MUNGED_PID"; sleep 0.1
done
munge -n -S "$SOCK" | unmunge -S "$SOCK" >/dev/null \
    || die "munged does not answer on $SOCK (log: $C/log/munged.out)"

NODE="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"   # RealMemory: ~90 % of RAM
# The config goes where every SLURM command looks by default. SLURM_CONF pointing elsewhere is
# not enough: the plugin's job step strips SLURM_* variables from the environment of the srun it
# runs inside each job (snakemake-executor-plugin-slurm-jobstep), and that srun then finds no config.
if [ -e "$CONF" ] && [ "$(head -1 "$CONF")" != "$MARK" ]; then
    die "$CONF exists and was not written by this script: this machine has its own SLURM; not touching it"
fi
mkdir -p "$(dirname "$CONF")"
WROTE_CONF=1
cat >"$CONF" <<EOF
$MARK
ClusterName=sgbench
# One node, reached at 127.0.0.1 whatever DNS says of its name.
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
AuthInfo=socket=$SOCK
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$C/ctld
SlurmdSpoolDir=$C/spool
SlurmctldPidFile=$C/slurmctld.pid
SlurmdPidFile=$C/slurmd.pid
SlurmctldLogFile=$C/log/slurmctld.log
SlurmdLogFile=$C/log/slurmd.log
MpiDefault=none
# No cgroups (a container or a VM without systemd): plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
# No slurmdbd: no accounting, so no sacct; the plugin reads job states from squeue, which keeps a
# finished job for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
ReturnToService=2
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=main Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
cp "$CONF" "$C/slurm.conf"   # a copy kept with the logs
say "$CONF: node $NODE, $CPUS CPUs, RealMemory $MEM_MB MB"
start slurmctld "$C/log/slurmctld.out" slurmctld -D
CTLD_PID=$!
start slurmd "$C/log/slurmd.out" slurmd -D
SLURMD_PID=$!

state=
for i in $(seq 60); do   # up to ~60 s
    alive slurmctld "$CTLD_PID"; alive slurmd "$SLURMD_PID"
    state="$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)"
    [ "$state" = idle ] && break
    sleep 1
done
if [ "$state" != idle ]; then
    tail -15 "$C/log/slurmctld.log" "$C/log/slurmd.log" >&2 || true
    die "node $NODE is not idle after 60 s (state: '${state:-no answer}'; logs: $C/log)"
fi
say "cluster up: node $NODE idle"
sinfo

# --- 3-5. the two SLURM runs, at once, beside the local one -----------------------------------
# The runs are independent; together they fill the cores that each leaves idle (the plugin checks
# job states every few seconds, Snakemake parses the workflow again in every job).
PROFILES=(--profile "$ROOT/workflows/profiles/slurm" --profile "$ROOT/tests/cluster/profile")
launch slurm -s "$ROOT/Snakefile" "${PROFILES[@]}" --config tier=smoke
launch failing -s "$ROOT/tests/cluster/failing/Snakefile" "${PROFILES[@]}"

# --- 3. the smoke tier through SLURM: every job submitted with sbatch and completed ------------
finish slurm
# Every job this cluster has seen: id|name|state|CPUs|memory|GRES (GPUs)|node
squeue -h -t all -o '%i|%j|%T|%C|%m|%b|%N' >"$WORK/slurm-jobs.txt"
if [ "$(cat "$WORK/slurm.rc")" != 0 ]; then
    tail -40 "$WORK/slurm.out" >&2; die "the smoke tier failed under SLURM (output: $WORK/slurm.out)"
fi
# Snakemake's count of jobs, less its local rules (`all`, `report`, `aggregate_*`, `figures_*`, which
# run in Snakemake itself), equals the plugin's sbatch submissions; slurmctld received each, and
# each is COMPLETED with its log kept.
expected="$(awk '/^Job stats:/ {on = 1; next} on && $1 == "total" {print n; exit}
                 on && NF == 2 && $2 ~ /^[0-9]+$/ && $1 !~ /^(all|report|aggregate_.*|figures_.*)$/ {n += $2}' \
            "$WORK/slurm.out")"
mapfile -t ids < <(sed -n 's/.*has been submitted with SLURM jobid \([0-9]*\) (log: .*/\1/p' "$WORK/slurm.out")
[ "${#ids[@]}" -gt 0 ] && [ "${#ids[@]}" = "$expected" ] \
    || die "Snakemake ran ${expected:-?} jobs but the plugin submitted ${#ids[@]} with sbatch ($WORK/slurm.out)"
for id in "${ids[@]}"; do
    grep -q "^$id|[^|]*|COMPLETED|" "$WORK/slurm-jobs.txt" \
        || die "SLURM job $id did not complete: '$(grep "^$id|" "$WORK/slurm-jobs.txt" || true)'"
    grep -q "_slurm_rpc_submit_batch_job: JobId=$id " "$C/log/slurmctld.log" || die "slurmctld has no submission of job $id"
    log="$(sed -n "s/.*with SLURM jobid $id (log: \(.*\))\.\$/\1/p" "$WORK/slurm.out")"
    [ -s "$log" ] || die "the sbatch log of job $id ($log) is missing or empty"
done
say "smoke tier: all ${#ids[@]} jobs submitted with sbatch (SLURM job ids ${ids[*]}) and COMPLETED:"
grep "has been submitted with SLURM jobid" "$WORK/slurm.out" | sed 's/^/    /'
for id in "${ids[@]}"; do grep "_job_complete: JobId=$id WEXITSTATUS" "$C/log/slurmctld.log"; done | sed 's/^/    slurmctld.log: /'

# --- 4. a failing job fails the workflow, naming its logs -------------------------------------
finish failing
[ "$(cat "$WORK/failing.rc")" != 0 ] || die "a failing SLURM job did not fail the workflow ($WORK/failing.out)"
grep -q "Error in rule fail:" "$WORK/failing.out" || die "no 'Error in rule fail:' in $WORK/failing.out"
grep -q "log: logs/fail.log" "$WORK/failing.out" || die "the job's log (logs/fail.log) is not named in $WORK/failing.out"
slurm_log="$(grep -o "$WORK/failing/logs/slurm/rule_fail/[0-9]*\.log" "$WORK/failing.out" | tail -1 || true)"
[ -n "$slurm_log" ] && [ -s "$slurm_log" ] || die "the job's sbatch log is not named in $WORK/failing.out, or is empty"
grep -q "failing on purpose" "$WORK/failing/logs/fail.log" || die "logs/fail.log lacks the job's own message"
say "failing job: the workflow failed (exit status $(cat "$WORK/failing.rc")) and named the job's logs:"
grep -E "submitted with SLURM jobid|Error in rule|SLURM-job|log: .*check log" "$WORK/failing.out" | sed 's/^/    /'

# --- 5. the same tier locally: the same numbers ----------------------------------------------
finish local
if [ "$(cat "$WORK/local.rc")" != 0 ]; then
    tail -40 "$WORK/local.out" >&2; die "the local smoke run failed (output: $WORK/local.out)"
fi
"$PY" "$ROOT/tests/cluster/compare_runs.py" "$WORK/local" "$WORK/slurm" \
    || die "the numbers of the SLURM run differ from the local run's"

say "all checks passed"
