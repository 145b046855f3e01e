#!/usr/bin/env bash
# tests/switchover.sh [DIR]
#
# Runs the switchover (docs/admin-guide.md §9) and failover (§10) procedures on a
# local csync pair and checks that nothing is lost: A starts as master and B as replica;
# a switchover makes B the master; then B "dies" with changes it never replicated, A is
# promoted, takes its own new mail, and when B returns as a replica the copy-back repair
# keeps every message of both sides. Prints PASS or FAIL; exit status 0 on PASS.
#
# Uses the binaries in $CSYNC_BIN (default target/debug of this checkout). Loopback only;
# everything lives under DIR (default: a new temporary directory).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${CSYNC_BIN:-${CARGO_TARGET_DIR:-$HERE/target}/debug}"
DIR="${1:-$(mktemp -d)}"
mkdir -p "$DIR"
PIDS=()
cleanup() {
    # Servers are started in subshells ($(start_server ...)): their pids are only in
    # the pid files.
    for f in "$DIR"/*/server.pid "$DIR"/*/client.pid; do
        [ -f "$f" ] && PIDS+=("$(cat "$f")")
    done
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }
for b in sync_server sync_client csyncadm; do
    [ -x "$BIN/$b" ] || fail "$BIN/$b is missing (cargo build --bins)"
done

PASSWORD=switchover-secret
conf() { echo "$DIR/$1/imapd.conf"; }
adm() { local host=$1; shift; "$BIN/csyncadm" -C "$(conf "$host")" "$@"; }

# Both hosts carry both roles' keys from the start (§9 step 1); sync_host is filled in
# when the other side's sync_server is up.
for host in A B; do
    mkdir -p "$DIR/$host/conf/sync"
    cat > "$(conf $host)" <<EOF
configdirectory: $DIR/$host/conf
partition-default: $DIR/$host/spool
servername: $host.localhost
admins: repluser
sync_log: yes
sync_authname: repluser
sync_password: $PASSWORD
sync_repeat_interval: 0
sync_shutdown_file: $DIR/$host/conf/sync/shutdown
EOF
    echo "$PASSWORD" | adm $host passwd -p repluser >/dev/null
done

start_server() { # host -> prints port
    local host=$1
    # The launch below redirects in the background: without this, the wait could read
    # an earlier server's line before the new one truncates the file.
    rm -f "$DIR/$host/server.out" "$DIR/$host/server.log"
    "$BIN/sync_server" -C "$(conf "$host")" --listen 127.0.0.1:0 \
        > "$DIR/$host/server.out" 2> "$DIR/$host/server.log" &
    echo $! > "$DIR/$host/server.pid"
    PIDS+=("$!")
    for _ in $(seq 600); do grep -q 'listening on' "$DIR/$host/server.out" 2>/dev/null && break; sleep 0.05; done
    local port
    port="$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$DIR/$host/server.out" | head -1)"
    [ -n "$port" ] || fail "$host's sync_server did not start: $(cat "$DIR/$host/server.log")"
    echo "$port"
}
stop_pid_file() {
    local f=$1
    [ -f "$f" ] || return 0
    local pid; pid="$(cat "$f")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    rm -f "$f"
}
point_at() { # master-host port
    sed -i '/^sync_host:/d' "$(conf "$1")"
    echo "sync_host: 127.0.0.1:$2" >> "$(conf "$1")"
}
start_client() {
    local host=$1
    "$BIN/sync_client" -C "$(conf "$host")" -R -v 2> "$DIR/$host/client.log" &
    echo $! > "$DIR/$host/client.pid"
    PIDS+=("$!")
}
deliver() { # host mailbox tag count
    local host=$1 mailbox=$2 tag=$3 n=$4
    for i in $(seq 1 "$n"); do
        printf 'From: x@example.com\r\nSubject: %s %s\r\nMessage-ID: <%s.%s@example.com>\r\n\r\nbody %s %s\r\n' \
            "$tag" "$i" "$tag" "$i" "$tag" "$i" | adm "$host" deliver "$mailbox" >/dev/null
    done
}
messages() { # host -> total messages
    adm "$1" mailboxes --no-header | awk -F'\t' '{n += $6} END {print n + 0}'
}
guids() { # host -> sorted "mailbox GUID" of every non-expunged message
    adm "$1" mailboxes --no-header | cut -f1 | while read -r mbox; do
        adm "$1" show "$mbox" | awk -F'\t' -v m="$mbox" '/^  [0-9]/ && $2 !~ /Expunged/ {print m, $4}'
    done | sort
}
drained() { # host
    local s="$DIR/$1/conf/sync"
    [ ! -s "$s/log" ] && [ ! -e "$s/log-run" ]
}
wait_for() { # seconds command...
    local t=$1; shift
    for _ in $(seq $((t * 20))); do "$@" && return 0; sleep 0.05; done
    return 1
}
converged() { "$BIN/sync_client" -C "$(conf "$1")" --verify -A > "$DIR/$1/verify.out" 2>&1; }

step "A is the master, B the replica"
PORT_B="$(start_server B)" || exit 1
point_at A "$PORT_B"
for u in alice bob; do adm A create "user.$u" >/dev/null; adm A create "user.$u.Work" >/dev/null; done
deliver A user.alice a1 15
deliver A user.bob.Work b1 10
adm A flags user.alice 1:5 +'\Seen' >/dev/null
start_client A
wait_for 30 drained A || fail "A's log did not drain"
wait_for 30 converged A || fail "B did not converge: $(grep DIFF "$DIR/A/verify.out" | head -3)"
echo "   B has $(messages B) messages"

step "switchover (§9): drain A, verify, fence A, swap, start B"
wait_for 30 drained A || fail "A's log did not drain"
touch "$DIR/A/conf/sync/shutdown"
wait_for 10 bash -c "! kill -0 $(cat "$DIR/A/client.pid") 2>/dev/null" || fail "A's client did not stop on the shutdown file"
[ ! -s "$DIR/A/conf/sync/quarantine" ] || fail "A quarantined users: $(cat "$DIR/A/conf/sync/quarantine")"
converged A || fail "verify on A: $(grep DIFF "$DIR/A/verify.out" | head -3)"
"$BIN/sync_client" -C "$(conf A)" -A -v 2> "$DIR/A/final.log" || fail "final -A on A failed"
grep -q ' 0 messages' "$DIR/A/final.log" || fail "the final -A pass still sent messages: $(tail -1 "$DIR/A/final.log")"
rm -f "$DIR/A/conf/sync/log" "$DIR/A/conf/sync/log-run"
stop_pid_file "$DIR/B/server.pid"
PORT_A="$(start_server A)" || exit 1
point_at B "$PORT_A"
"$BIN/sync_client" -C "$(conf B)" -A -v 2> "$DIR/B/first.log" || fail "B's first -A failed"
converged B || fail "after the swap: $(grep DIFF "$DIR/B/verify.out" | head -3)"
start_client B
deliver B user.alice a2 5
wait_for 30 drained B || fail "B's log did not drain"
wait_for 30 converged B || fail "A did not converge: $(grep DIFF "$DIR/B/verify.out" | head -3)"
[ "$(messages A)" = "$(messages B)" ] || fail "A has $(messages A), B $(messages B)"
echo "   both have $(messages A) messages; B is the master"

step "failover (§10): B dies with unreplicated mail; A is promoted"
kill -KILL "$(cat "$DIR/B/client.pid")"; rm -f "$DIR/B/client.pid"
deliver B user.alice lost 3          # B's last changes, never replicated
deliver B user.bob.Work lost 2
stop_pid_file "$DIR/A/server.pid"    # fence: nothing may push into A any more
adm A verify --no-hash > "$DIR/A/fsck.out" || fail "A's store is not clean: $(cat "$DIR/A/fsck.out")"
deliver A user.alice new 4           # A takes mail as the new master
deliver A user.bob.Work new 2

step "B returns as a replica; A re-syncs it with copy-back"
mkdir -p "$DIR/B/old-sync" && cp -a "$DIR/B/conf/sync/." "$DIR/B/old-sync/"
rm -f "$DIR/B/conf/sync/log" "$DIR/B/conf/sync/log-run"
PORT_B="$(start_server B)" || exit 1
point_at A "$PORT_B"
expected="$( (guids A; guids B) | sort -u)"
"$BIN/sync_client" -C "$(conf A)" -A -v 2> "$DIR/A/resync.log" || true
"$BIN/sync_client" -C "$(conf A)" -A -v 2> "$DIR/A/resync2.log" \
    || fail "the second -A after failover failed: $(grep -E 'ERROR|sync_client:' "$DIR/A/resync2.log" | head -5)"
converged A || fail "after failover: $(grep DIFF "$DIR/A/verify.out" | head -3)"
[ "$(guids A)" = "$(guids B)" ] || fail "A and B hold different messages"
[ "$(guids A)" = "$expected" ] || fail "messages were lost: $(comm -23 <(echo "$expected") <(guids A) | wc -l) missing"
echo "   both have $(messages A) messages, every message of both sides kept"
echo PASS
