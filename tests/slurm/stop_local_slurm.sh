#!/usr/bin/env bash
# Stop the one-node Slurm started by tests/slurm/start_local_slurm.sh:
# slurmd, slurmctld and munged.  Idempotent: exits 0 if nothing is running.
set -uo pipefail

LOCAL_DIR="${SLURM_LOCAL_DIR:-/var/spool/slurm-local}"
MUNGE_PID=/run/munge/munged.pid
export PATH="/usr/sbin:/sbin:$PATH"

log() { echo "[stop_local_slurm] $*" >&2; }

# PIDs of live processes whose executable name is exactly $1.
pids_named() {
  local name=$1 d
  for d in /proc/[0-9]*; do
    [[ $(cat "$d/comm" 2>/dev/null) == "$name" ]] && echo "${d#/proc/}"
  done
  return 0
}

# Stop daemon $1 using pid file $2, falling back to processes with that exact name.
stop_daemon() {
  local name=$1 pidfile=$2 pids="" pid
  if [[ -s $pidfile ]]; then
    pid=$(tr -dc '0-9' <"$pidfile")
    if [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
      pids=$pid
    fi
  fi
  pids="$pids $(pids_named "$name")"
  pids=$(echo $pids | tr ' ' '\n' | sort -u | tr '\n' ' ')
  if [[ -z ${pids// /} ]]; then
    rm -f "$pidfile"; return 0
  fi
  log "stopping $name (pid $pids)"
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 1 50); do
    local alive=0
    for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && break
    sleep 0.2
  done
  for pid in $pids; do
    if kill -0 "$pid" 2>/dev/null; then
      log "$name pid $pid ignored SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  rm -f "$pidfile"
}

# Polite shutdown first: slurmctld tells slurmd to exit too.
if command -v scontrol >/dev/null 2>&1 && scontrol ping 2>/dev/null | grep -q UP; then
  log "scontrol shutdown"
  scontrol shutdown >/dev/null 2>&1 || true
  for _ in $(seq 1 50); do
    [[ -z $(pids_named slurmctld)$(pids_named slurmd) ]] && break
    sleep 0.2
  done
fi

stop_daemon slurmd "$LOCAL_DIR/slurmd.pid"
stop_daemon slurmctld "$LOCAL_DIR/slurmctld.pid"
stop_daemon munged "$MUNGE_PID"
# leftover job step daemons, if any
stop_daemon slurmstepd /nonexistent
log "stopped"
exit 0
