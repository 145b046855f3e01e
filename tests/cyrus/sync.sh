#!/usr/bin/env bash
# sync.sh - run the real Cyrus sync_client of a master instance.
#
#   sync.sh DIR [options] -u USER...        user sync
#   sync.sh DIR [options] -m MBOX...        mailbox sync (internal names: user.alice.Work)
#   sync.sh DIR [options] -A                all users
#   sync.sh DIR [options] -s USER...        META only (seen, subscriptions, sieve)
#   sync.sh DIR [options] -R -1             rolling: process one sync log file, exit
#   sync.sh DIR [options] -- ARGS...        any other sync_client arguments
#   sync.sh DIR [options] rolling-start [ARGS...]   sync_client -R in the background
#   sync.sh DIR rolling-wait [SECONDS]      wait until the sync log is drained
#   sync.sh DIR rolling-stop                stop it (shutdown file, then SIGTERM)
#   sync.sh DIR rolling-status
# options:
#   -S HOST:PORT     replica (default: CYRUS_SYNC_HOST:CYRUS_SYNC_PORT of DIR,
#                    i.e. --sync-host/--sync-port given at creation; env SYNC_SERVER)
#   --timeout SECS   kill a one-shot run after SECS (default 120; env
#                    CYRUS_SYNC_TIMEOUT); sync_client retries an unreachable
#                    replica forever, so a timeout gives exit code 124
#   --log FILE       where the output goes (default DIR/log/sync-NNN.log)
#   --trace          -v -v: also log the protocol (after login) to the log
# Always runs sync_client -C DIR/etc/imapd.conf -S HOST:PORT -v; its stdout and
# stderr go to the log file; the exit code is sync_client's (or timeout's).
set -uo pipefail
. "$(dirname "$0")/common.sh"

[ $# -ge 2 ] || { sed -n '2,/^set -u/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//' >&2; exit 2; }
DIR="$(abspath "$1")"; shift
load_instance "$DIR"
[ "$CYRUS_ROLE" = master ] || die "$DIR is a $CYRUS_ROLE instance; sync.sh runs a master's sync_client"

SERVER="${SYNC_SERVER:-$CYRUS_SYNC_HOST:$CYRUS_SYNC_PORT}"
TIMEOUT="${CYRUS_SYNC_TIMEOUT:-120}"
LOG=""
VERB=(-v)
while [ $# -gt 0 ]; do
    case "$1" in
        -S) SERVER="$2"; shift 2 ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        --log) LOG="$2"; shift 2 ;;
        --trace) VERB=(-v -v); shift ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || die "no sync_client mode given"

PIDF="$DIR/run/rolling.pid"
RCF="$DIR/run/rolling.rc"
SHUT="$DIR/conf/sync/shutdown"
SYNCLOG="$DIR/conf/sync/log"

next_log() {
    local n=1
    while [ -e "$(printf '%s/log/sync-%03d.log' "$DIR" "$n")" ]; do n=$((n + 1)); done
    printf '%s/log/sync-%03d.log' "$DIR" "$n"
}

rolling_pid() { [ -f "$PIDF" ] && pid_is_ours "$(cat "$PIDF")" "$CYRUS_CONF" && cat "$PIDF"; }

case "$1" in
rolling-start)
    shift
    require_cyrus
    if pid="$(rolling_pid)"; then die "rolling sync_client already running (pid $pid)"; fi
    rm -f "$PIDF" "$RCF" "$SHUT"
    LOG="${LOG:-$DIR/log/rolling.log}"
    cyrus_env
    export LOG PIDF RCF
    # The wrapper shell records sync_client's pid and, when it ends, its exit code.
    setsid bash -c '"$@" </dev/null >>"$LOG" 2>&1 & echo $! >"$PIDF"; wait $!; echo $? >"$RCF"' \
        rolling "$CYRUS_BIN/sync_client" -C "$CYRUS_CONF" -S "$SERVER" "${VERB[@]}" -R "$@" \
        </dev/null >/dev/null 2>&1 &
    for _ in $(seq 1 50); do [ -s "$PIDF" ] && break; sleep 0.1; done
    sleep 0.5
    if ! pid="$(rolling_pid)"; then
        tail -n 20 "$LOG" >&2
        die "rolling sync_client did not start (exit $(cat "$RCF" 2>/dev/null)); see $LOG and $CYRUS_LOG"
    fi
    note "rolling sync_client running (pid $pid) -> $SERVER, output in $LOG"
    ;;
rolling-wait)
    # Drained = no pending log and no log-run being processed.  sync_client
    # renames log -> log-run at the start of a run and deletes it at the end.
    t="${2:-60}"
    for _ in $(seq 1 $((t * 10))); do
        if [ ! -s "$SYNCLOG" ] && [ ! -e "$SYNCLOG-run" ]; then exit 0; fi
        if ! rolling_pid >/dev/null; then die "rolling sync_client is not running (exit $(cat "$RCF" 2>/dev/null)); see $DIR/log/rolling.log"; fi
        sleep 0.1
    done
    die "sync log not drained after ${t}s"
    ;;
rolling-stop)
    if ! pid="$(rolling_pid)"; then
        rc="$(cat "$RCF" 2>/dev/null || echo 0)"
        rm -f "$PIDF"
        note "rolling sync_client not running (last exit code $rc)"
        exit "$rc"
    fi
    touch "$SHUT"; chown "$CYRUS_USER" "$SHUT" 2>/dev/null || true
    for _ in $(seq 1 150); do pid_alive "$pid" || break; sleep 0.1; done
    if pid_alive "$pid"; then note "rolling sync_client ignored the shutdown file: SIGTERM"; kill -TERM "$pid" 2>/dev/null; sleep 1; fi
    if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null; sleep 0.3; fi
    for _ in $(seq 1 20); do [ -s "$RCF" ] && break; sleep 0.1; done
    rc="$(cat "$RCF" 2>/dev/null || echo 1)"
    rm -f "$PIDF" "$SHUT"
    note "rolling sync_client stopped (pid $pid, exit code $rc)"
    exit "$rc"
    ;;
rolling-status)
    if pid="$(rolling_pid)"; then echo "running pid $pid"; else echo "not running (last exit code $(cat "$RCF" 2>/dev/null || echo -))"; exit 3; fi
    ;;
*)
    require_cyrus
    LOG="${LOG:-$(next_log)}"
    cyrus_env
    echo "# $(date '+%F %T') sync_client -C $CYRUS_CONF -S $SERVER ${VERB[*]} $*" >"$LOG"
    timeout -k 5 "$TIMEOUT" "$CYRUS_BIN/sync_client" -C "$CYRUS_CONF" -S "$SERVER" "${VERB[@]}" "$@" \
        </dev/null >>"$LOG" 2>&1
    rc=$?
    echo "# exit code $rc" >>"$LOG"
    if [ "$rc" != 0 ]; then
        tail -n 25 "$LOG" >&2
        note "sync_client $* FAILED (exit code $rc$([ "$rc" = 124 ] && echo ", timeout after ${TIMEOUT}s")); log: $LOG; Cyrus log: $CYRUS_LOG"
    else
        note "sync_client $* ok; log: $LOG"
    fi
    exit "$rc"
    ;;
esac
