#!/usr/bin/env bash
# Start a throwaway single-node SLURM cluster on this machine, with a fake GPU, for tests and CI.
#
#   tests/slurm/start-local-slurm.sh            # as root; prints SLURM_CONF=... when up
#   source $STATE_DIR/env.sh                    # SLURM_CONF: then sinfo, sbatch, sacct, ...
#   tests/slurm/stop-local-slurm.sh             # stops exactly the daemons this script started
#
# Everything lives in $STATE_DIR: configs, munge key and socket, MariaDB data, spool, logs, and
# the file `pids` (name, PID, start time of each daemon started here). Outside it, only the
# symlink /run/slurm/conf/slurm.conf is made (srun inside jobs needs it, see below); nothing under
# /etc is written, no system service is touched, and the daemons use their own ports, munge
# socket and database. SLURM commands find this cluster through SLURM_CONF.
# Debian/Ubuntu packages are installed with apt-get when missing (needs root and a package mirror).
#
# Exit status: 0 cluster up (or already up with the same configuration); 77 SLURM cannot run
# here (not root, no apt-get, packages cannot be installed, a real SLURM is configured on this
# machine): callers may skip; anything else is a real failure, with the daemon logs printed.
#
# Settings (environment):
#   STATE_DIR           where everything lives            [${TMPDIR:-/tmp}/grainflow-slurm]
#   WITH_DBD            1: MariaDB + slurmdbd, so sacct works (the plugin's default status
#                       command); 0: no accounting, use `--slurm-status-command squeue`   [1]
#   SLURM_CI_CPUS       CPUs the node declares (may exceed the real cores)               [nproc]
#   SLURM_CI_MEM_MB     node memory, MB; must not exceed the real memory      [80 % of MemTotal]
#   SLURM_CI_GPUS       fake GPUs (backed by /dev/null, /dev/zero, ...); 0 = none           [1]
#   SLURM_CI_GPU_TYPE   GPU type, e.g. a100, for `--gpus=a100:1`; empty = untyped        [empty]
#   SLURM_CI_PARTITION  default partition (CPU jobs)                                      [cpu]
#   SLURM_CI_GPU_PARTITION  second partition on the same node (GPU jobs)                  [gpu]
#   SLURM_CI_PORT       first of four TCP ports: slurmctld, slurmd, slurmdbd, MariaDB;
#                       unset: 16817, or the next free block of four after it           [16817]
set -euo pipefail

STATE_DIR=${STATE_DIR:-${TMPDIR:-/tmp}/grainflow-slurm}
WITH_DBD=${WITH_DBD:-1}
CPUS=${SLURM_CI_CPUS:-$(nproc)}
GPUS=${SLURM_CI_GPUS:-1}
GPU_TYPE=${SLURM_CI_GPU_TYPE:-}
PARTITION=${SLURM_CI_PARTITION:-cpu}
GPU_PARTITION=${SLURM_CI_GPU_PARTITION:-gpu}
PORT=${SLURM_CI_PORT:-16817}
if [[ -z ${SLURM_CI_MEM_MB:-} ]]; then
    # 80 % of MemTotal rounded down to whole GiB: stable from run to run (MemAvailable is not),
    # and below the real memory, else slurmd drains the node ("Low RealMemory")
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    SLURM_CI_MEM_MB=$((mem_kb * 8 / 10 / 1024 / 1024 * 1024))
fi
MEM_MB=$SLURM_CI_MEM_MB

skip() { echo "start-local-slurm: SKIP: $*" >&2; exit 77; }
die() { echo "start-local-slurm: ERROR: $*" >&2; exit 1; }
log() { echo "start-local-slurm: $*" >&2; }

[[ $(id -u) == 0 ]] || skip "needs root (daemons, apt-get); running as $(id -un)"
[[ $WITH_DBD == 0 || $WITH_DBD == 1 ]] || die "WITH_DBD must be 0 or 1, got WITH_DBD=$WITH_DBD"
[[ $GPUS =~ ^[0-9]+$ && $GPUS -le 8 ]] || die "SLURM_CI_GPUS must be 0..8, got $GPUS"
case $STATE_DIR in /*) ;; *) STATE_DIR=$PWD/$STATE_DIR ;; esac
# unix socket paths are limited to 107 bytes
((${#STATE_DIR} < 80)) || die "STATE_DIR is too long for socket paths inside it: $STATE_DIR"
mkdir -p "$STATE_DIR"/{etc,log,run,ctld,spool,munge}
chmod 700 "$STATE_DIR" "$STATE_DIR/munge"

# --- packages -----------------------------------------------------------------------------------
need=(munge slurmctld slurmd slurm-client)
[[ $WITH_DBD == 1 ]] && need+=(slurmdbd mariadb-server)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$p")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || skip "packages ${missing[*]} are missing and no apt-get"
    log "installing ${missing[*]} with apt-get"
    # no prompts (CI has no stdin), wait for a busy dpkg lock, keep existing config files
    apt_opts=(-q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
        -o Dpkg::Options::=--force-confold)
    apt_log=$STATE_DIR/log/apt.log
    export DEBIAN_FRONTEND=noninteractive
    apt_tail() { tail -2 "$apt_log" | tr '\n' ' '; }  # one line, for the skip reason
    apt-get "${apt_opts[@]}" update </dev/null >"$apt_log" 2>&1 \
        || skip "apt-get update failed (no package mirror?): $(apt_tail)"
    apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" </dev/null \
        >>"$apt_log" 2>&1 || skip "apt-get install ${missing[*]} failed: $(apt_tail)"
fi

# --- configuration ------------------------------------------------------------------------------
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -s $STATE_DIR/pids && -f $STATE_DIR/etc/slurm.conf && -z ${SLURM_CI_PORT:-} ]]; then
    PORT=$(sed -n 's/^SlurmctldPort=//p' "$STATE_DIR/etc/slurm.conf")  # the running cluster's
elif [[ ! -s $STATE_DIR/pids ]]; then
    for ((try = 0; ; try++)); do
        busy=0
        for ((p = PORT; p < PORT + 4; p++)); do port_busy $p && busy=1; done
        ((busy)) || break
        [[ -n ${SLURM_CI_PORT:-} ]] && die "port $PORT..$((PORT + 3)) busy: change SLURM_CI_PORT"
        ((try < 20)) || die "no 4 free ports found from ${PORT}: set SLURM_CI_PORT"
        PORT=$((PORT + 10))  # the default block is taken (another test cluster?): try the next
    done
fi
HOST=$(hostname -s)
ETC=$STATE_DIR/etc
MUNGE_SOCKET=$STATE_DIR/munge/munge.socket
export SLURM_CONF=$ETC/slurm.conf

gres=""
gres_conf="AutoDetect=off"
if ((GPUS > 0)); then
    gres="Gres=gpu${GPU_TYPE:+:$GPU_TYPE}:$GPUS"
    files=(/dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty /dev/ptmx /dev/console)
    for ((i = 0; i < GPUS; i++)); do
        # each GPU needs its own File; these devices exist everywhere and nothing opens them
        gres_conf+=$'\n'"NodeName=$HOST Name=gpu${GPU_TYPE:+ Type=$GPU_TYPE} File=${files[$i]}"
    done
fi
if [[ $WITH_DBD == 1 ]]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
# for slurmdbd connections the munge socket is given here, not by AuthInfo
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux"
else
    accounting="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

new_conf=$(cat <<EOF
# written by tests/slurm/start-local-slurm.sh: a throwaway single-node test cluster
ClusterName=grainflowci
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
# no cgroups here (no systemd, maybe a sandbox)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without it a job with no --mem takes the whole node and jobs serialise
DefMemPerCPU=256
# lets CPUs= exceed the real core count
SlurmdParameters=config_overrides
ReturnToService=2
# finished jobs stay in squeue 5 min: the plugin's squeue status mode needs >= 3x its poll delay
MinJobAge=300
KillWait=5
MailProg=/bin/true
$accounting
GresTypes=gpu
# one socket: with CPUs= alone slurmd assumes two and "reconfigures socket/core boundaries"
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1 \
    RealMemory=$MEM_MB $gres State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=$GPU_PARTITION Nodes=ALL Default=NO MaxTime=INFINITE State=UP
EOF
)

# --- already running? ---------------------------------------------------------------------------
alive() { # alive NAME PID START: the recorded process still exists and is the same one
    [[ -r /proc/$2/stat ]] && [[ $(cat "/proc/$2/comm" 2>/dev/null) == "$1" ]] \
        && [[ $(awk '{print $22}' "/proc/$2/stat" 2>/dev/null) == "$3" ]]
}
if [[ -s $STATE_DIR/pids ]]; then
    all_alive=1
    while read -r name pid start; do
        [[ -z ${name:-} ]] && continue
        alive "$name" "$pid" "$start" || all_alive=0
    done <"$STATE_DIR/pids"
    if ((all_alive)) && [[ -f $ETC/slurm.conf && "$(cat "$ETC/slurm.conf")" == "$new_conf" ]]; then
        log "already running with this configuration ($STATE_DIR)"
        echo "SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    die "$STATE_DIR holds a cluster that is running with another configuration or is half dead: " \
        "run STATE_DIR=$STATE_DIR tests/slurm/stop-local-slurm.sh first"
fi

# The jobstep plugin strips SLURM_* (SLURM_CONF too) from the environment of the `srun` it runs
# inside each job, so that srun finds its configuration only in the default places:
# /etc/slurm/slurm.conf, else /run/slurm/conf/slurm.conf (where a configless slurmd links its
# copy). Link ours there, never over a configuration that is not ours.
RUN_LINK=/run/slurm/conf/slurm.conf
[[ -e /etc/slurm/slurm.conf ]] && skip "/etc/slurm/slurm.conf exists (a real SLURM is" \
    "configured here): srun inside the jobs would use it, not this test cluster"
if [[ -L $RUN_LINK ]]; then
    other=$(readlink "$RUN_LINK")
    other_state=${other%/etc/slurm.conf}
    if [[ $other != "$ETC/slurm.conf" ]]; then
        head -1 "$other" 2>/dev/null | grep -q "start-local-slurm.sh" \
            || skip "$RUN_LINK links to $other, not a test cluster's configuration"
        [[ -s $other_state/pids ]] && die "another test cluster runs from $other_state:" \
            "STATE_DIR=$other_state $(dirname "$0")/stop-local-slurm.sh"
        rm -f "$RUN_LINK"   # left behind by a test cluster that is stopped
    fi
elif [[ -e $RUN_LINK ]]; then
    skip "$RUN_LINK exists (a configless slurmd runs here)"
fi

printf '%s\n' "$new_conf" >"$ETC/slurm.conf"
printf '%s\n' "$gres_conf" >"$ETC/gres.conf"
: >"$STATE_DIR/pids"
printf 'export SLURM_CONF=%q\n' "$SLURM_CONF" >"$STATE_DIR/env.sh"

record() { # record NAME PID: what the stop script will stop, with its start time
    [[ $(cat "/proc/$2/comm" 2>/dev/null) == "$1" ]] || fail "$1 (PID ${2:-?}) is not running"
    echo "$1 $2 $(awk '{print $22}' "/proc/$2/stat")" >>"$STATE_DIR/pids"
    log "started $1 (PID $2)"
}
dump_logs() {
    local f
    for f in "$STATE_DIR"/log/*.log "$STATE_DIR"/munge/munged.log; do
        if [[ -f $f ]]; then echo "----- $f (last 30 lines)"; tail -30 "$f"; fi
    done >&2
}
fail() { log "ERROR: $*"; dump_logs; exit 1; }
wait_for() { # wait_for SECONDS WHAT COMMAND...: retry COMMAND every 0.2 s
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "timed out waiting for $what"
        sleep 0.2
    done
}
pid_from() { # pid_from PIDFILE: wait for a daemon's pidfile and print the PID
    local deadline=$((SECONDS + 20))
    until [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; do
        ((SECONDS < deadline)) || fail "no PID in $1"
        sleep 0.1
    done
    cat "$1"
}

mkdir -p "$(dirname "$RUN_LINK")"
ln -sfn "$ETC/slurm.conf" "$RUN_LINK"

# --- munge: a private daemon with its own key and socket ----------------------------------------
if [[ ! -s $STATE_DIR/munge/munge.key ]]; then
    dd if=/dev/urandom of="$STATE_DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$STATE_DIR/munge/munge.key"
fi
# --force: munged wants every directory above its socket to be world-executable; pytest's
# tmp dirs are 0700, and only root talks to this daemon
munged --force --socket="$MUNGE_SOCKET" --key-file="$STATE_DIR/munge/munge.key" \
    --pid-file="$STATE_DIR/munge/munged.pid" --log-file="$STATE_DIR/munge/munged.log" \
    --seed-file="$STATE_DIR/munge/munged.seed" </dev/null >/dev/null 2>&1 \
    || fail "munged did not start"
pid=$(pid_from "$STATE_DIR/munge/munged.pid") || fail "munged wrote no PID"
record munged "$pid"
wait_for 10 "munge" sh -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'"

# --- MariaDB and slurmdbd (accounting, so that sacct works) -------------------------------------
if [[ $WITH_DBD == 1 ]]; then
    DB=$STATE_DIR/mysql
    DB_SOCKET=$DB/mysqld.sock
    if [[ ! -d $DB/data/mysql ]]; then
        mkdir -p "$DB/data"
        mariadb-install-db --no-defaults --user=root --datadir="$DB/data" --skip-test-db \
            --auth-root-authentication-method=socket >"$STATE_DIR/log/mariadb-install.log" 2>&1 \
            || fail "mariadb-install-db failed"
    fi
    # not a daemon by itself: run it in its own session, detached from our stdio. TCP on
    # 127.0.0.1 only (slurmdbd cannot be given a socket path), and a small buffer pool
    setsid mariadbd --no-defaults --user=root --datadir="$DB/data" --socket="$DB_SOCKET" \
        --pid-file="$DB/mariadbd.pid" --port=$((PORT + 3)) --bind-address=127.0.0.1 \
        --skip-name-resolve --log-error="$STATE_DIR/log/mariadbd.log" \
        --innodb-buffer-pool-size=64M --innodb-log-file-size=16M </dev/null >/dev/null 2>&1 &
    pid=$!
    wait_for 60 "MariaDB" mariadb --no-defaults -S "$DB_SOCKET" -u root -e "SELECT 1"
    record mariadbd "$pid"
    if [[ ! -s $STATE_DIR/dbpass ]]; then
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE_DIR/dbpass")
    fi
    DBPASS=$(cat "$STATE_DIR/dbpass")
    mariadb --no-defaults -S "$DB_SOCKET" -u root <<EOF || fail "could not create the database user"
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
    (umask 077 && cat >"$ETC/slurmdbd.conf" <<EOF
# written by tests/slurm/start-local-slurm.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$STATE_DIR/run/slurmdbd.pid
LogFile=$STATE_DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
EOF
    )
    slurmdbd </dev/null >/dev/null 2>&1 || fail "slurmdbd did not start"
    pid=$(pid_from "$STATE_DIR/run/slurmdbd.pid") || fail "slurmdbd wrote no PID"
    record slurmdbd "$pid"
    # slurmctld registers the cluster by itself once slurmdbd answers
    wait_for 30 "slurmdbd" sacctmgr -n list cluster
fi

# --- slurmctld and slurmd -----------------------------------------------------------------------
slurmctld </dev/null >/dev/null 2>&1 || fail "slurmctld did not start"
pid=$(pid_from "$STATE_DIR/run/slurmctld.pid") || fail "slurmctld wrote no PID"
record slurmctld "$pid"
wait_for 30 "slurmctld" scontrol ping
slurmd -N "$HOST" </dev/null >/dev/null 2>&1 || fail "slurmd did not start"
pid=$(pid_from "$STATE_DIR/run/slurmd.pid") || fail "slurmd wrote no PID"
record slurmd "$pid"
wait_for 30 "node $HOST to be idle" sh -c "sinfo -h -n '$HOST' -o %T | grep -qx idle"
if [[ $WITH_DBD == 1 ]]; then
    # the user association that sbatch -A root and the plugin's account check rely on
    wait_for 30 "the root association" \
        sh -c "sacctmgr -n -P list assoc user=root format=account | grep -qx root"
fi
log "cluster up: partitions $PARTITION (default) and $GPU_PARTITION, node $HOST," \
    "$CPUS CPUs, $MEM_MB MB, $GPUS fake GPU(s)${GPU_TYPE:+ of type $GPU_TYPE}, accounting=$WITH_DBD"
echo "SLURM_CONF=$SLURM_CONF"
