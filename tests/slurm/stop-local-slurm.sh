#!/usr/bin/env bash
# Stop the test cluster that tests/slurm/start-local-slurm.sh started in $STATE_DIR.
#
# Stops exactly the processes recorded in $STATE_DIR/pids, and only if each PID still belongs to
# the process that was started (same name, same start time): never pkill or killall. Jobs still
# in this cluster are cancelled first; then the SLURM daemons get SIGTERM together, then MariaDB
# and munge (which the SLURM daemons need while they shut down); SIGKILL after STOP_TIMEOUT s.
# Safe to run twice, or after a start that failed half way. Leaves $STATE_DIR (logs, configs)
# in place for inspection. Exit status 0 when nothing recorded is left running.
#
# Settings (environment): STATE_DIR as for the start script; STOP_TIMEOUT [20].
set -uo pipefail

STATE_DIR=${STATE_DIR:-${TMPDIR:-/tmp}/grainflow-slurm}
STOP_TIMEOUT=${STOP_TIMEOUT:-20}
PIDS=$STATE_DIR/pids
RUN_LINK=/run/slurm/conf/slurm.conf
log() { echo "stop-local-slurm: $*" >&2; }

if [[ ! -s $PIDS ]]; then
    log "nothing recorded in $PIDS: nothing to stop"
    exit 0
fi

same_process() { # same_process NAME PID START
    [[ -r /proc/$2/stat ]] && [[ $(cat "/proc/$2/comm" 2>/dev/null) == "$1" ]] \
        && [[ $(awk '{print $22}' "/proc/$2/stat" 2>/dev/null) == "$3" ]]
}

# cancel what is left in this cluster's queue (its jobs only: SLURM_CONF selects the cluster)
if [[ -f $STATE_DIR/etc/slurm.conf ]] && grep -q '^slurmctld ' "$PIDS"; then
    SLURM_CONF=$STATE_DIR/etc/slurm.conf timeout 10 scancel --user "$(id -un)" >/dev/null 2>&1
fi

survivors=()
stop_group() { # stop_group LINE...: SIGTERM all, wait for all, SIGKILL what is left
    local line name pid start deadline running
    for line in "$@"; do
        read -r name pid start <<<"$line"
        if same_process "$name" "$pid" "$start"; then
            kill -TERM "$pid" 2>/dev/null
        else
            log "$name (PID $pid) is no longer running"
        fi
    done
    deadline=$((SECONDS + STOP_TIMEOUT))
    while :; do
        running=()
        for line in "$@"; do
            read -r name pid start <<<"$line"
            same_process "$name" "$pid" "$start" && running+=("$line")
        done
        ((${#running[@]} == 0 || SECONDS >= deadline)) && break
        sleep 0.1
    done
    for line in "${running[@]}"; do
        read -r name pid start <<<"$line"
        log "$name (PID $pid) ignored SIGTERM for ${STOP_TIMEOUT} s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        sleep 0.5
        if same_process "$name" "$pid" "$start"; then
            log "could not stop $name (PID $pid)"
            survivors+=("$line")
        fi
    done
    for line in "$@"; do
        read -r name pid start <<<"$line"
        same_process "$name" "$pid" "$start" && continue
        log "stopped $name (PID $pid)"
        # daemons leave their pidfiles behind on SIGTERM; remove those that still name this PID
        for f in "$STATE_DIR"/run/*.pid "$STATE_DIR"/munge/*.pid "$STATE_DIR"/mysql/*.pid; do
            [[ -f $f && $(cat "$f" 2>/dev/null) == "$pid" ]] && rm -f "$f"
        done
    done
}

slurm=() rest=()
while read -r line; do
    case $line in
        slurm*) slurm+=("$line") ;;
        ?*) rest+=("$line") ;;
    esac
done <"$PIDS"
((${#slurm[@]})) && stop_group "${slurm[@]}"
((${#rest[@]})) && stop_group "${rest[@]}"

# keep only what could not be stopped, so that a second run retries exactly those
if ((${#survivors[@]})); then
    printf '%s\n' "${survivors[@]}" >"$PIDS"
    exit 1
fi
: >"$PIDS"
# the link that lets srun inside jobs find this cluster's configuration (see the start script)
if [[ -L $RUN_LINK && $(readlink "$RUN_LINK") == "$STATE_DIR/etc/slurm.conf" ]]; then
    rm -f "$RUN_LINK"
    rmdir /run/slurm/conf /run/slurm 2>/dev/null
fi
exit 0
