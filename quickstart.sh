#!/usr/bin/env bash
# quickstart.sh [DIR]        build csync and run a replicating pair under DIR
# quickstart.sh stop [DIR]   stop it
#
# Everything lives under DIR (default ./csync-demo): no root, no system files, loopback
# only. The two halves use the same imapd.conf keys as a real two-host pair; growing to
# two machines is editing sync_host in DIR/master/imapd.conf.
set -euo pipefail

cmd=start
if [ "${1:-}" = stop ]; then cmd=stop; shift; fi
DIR="$(realpath -m "${1:-./csync-demo}")"
HERE="$(cd "$(dirname "$0")" && pwd)"
# CSYNC_PROFILE=debug uses debug builds (the tests do; release is for real use).
PROFILE="${CSYNC_PROFILE:-release}"
BIN="${CARGO_TARGET_DIR:-$HERE/target}/$PROFILE"

stop_pair() {
    local stopped=0
    if [ -f "$DIR/master/conf/sync/shutdown.path" ]; then
        touch "$(cat "$DIR/master/conf/sync/shutdown.path")"
    fi
    for p in client server; do
        if [ -f "$DIR/$p.pid" ]; then
            pid="$(cat "$DIR/$p.pid")"
            if kill -0 "$pid" 2>/dev/null; then
                kill -TERM "$pid" 2>/dev/null || true
                for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
                stopped=1
            fi
            rm -f "$DIR/$p.pid"
        fi
    done
    [ "$stopped" = 1 ] && echo "stopped the pair in $DIR" || echo "nothing running in $DIR"
}

if [ "$cmd" = stop ]; then stop_pair; exit 0; fi

echo "== building csync ($PROFILE)"
if [ "$PROFILE" = release ]; then
    (cd "$HERE" && cargo build --release --quiet --bins)
else
    (cd "$HERE" && cargo build --quiet --bins)
fi

if [ -f "$DIR/server.pid" ] && kill -0 "$(cat "$DIR/server.pid")" 2>/dev/null; then
    echo "a pair is already running in $DIR; stop it with: $0 stop $DIR" >&2
    exit 1
fi
rm -rf "$DIR/master" "$DIR/replica"
mkdir -p "$DIR/master" "$DIR/replica"
PASSWORD="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"

cat > "$DIR/replica/imapd.conf" <<EOF
# The replica: what sync_server reads.
configdirectory: $DIR/replica/conf
partition-default: $DIR/replica/spool
servername: replica.localhost
# Only this login may replicate (its password is in conf/csync.passwd).
admins: repluser
EOF

echo "== replica: login repluser, sync_server on 127.0.0.1"
echo "$PASSWORD" | "$BIN/csyncadm" -C "$DIR/replica/imapd.conf" passwd -p repluser >/dev/null
# Never read an earlier run's line while the new server starts.
rm -f "$DIR/server.out" "$DIR/server.log"
"$BIN/sync_server" -C "$DIR/replica/imapd.conf" --listen 127.0.0.1:0 -v \
    > "$DIR/server.out" 2> "$DIR/server.log" &
echo $! > "$DIR/server.pid"
for _ in $(seq 100); do grep -q 'listening on' "$DIR/server.out" 2>/dev/null && break; sleep 0.05; done
PORT="$(sed -n 's/.*listening on .*:\([0-9]*\)$/\1/p' "$DIR/server.out" | head -1)"
[ -n "$PORT" ] || { echo "sync_server did not start; see $DIR/server.log" >&2; exit 1; }

cat > "$DIR/master/imapd.conf" <<EOF
# The master: what csyncadm (local changes) and sync_client read.
configdirectory: $DIR/master/conf
partition-default: $DIR/master/spool
# Every change is logged for the rolling sync_client.
sync_log: yes
sync_host: 127.0.0.1:$PORT
sync_authname: repluser
sync_password: $PASSWORD
# Rolling mode wakes on each write to the log; 0: start a run at once (no batching
# window). Cyrus's default is 1s.
sync_repeat_interval: 0
sync_shutdown_file: $DIR/master/conf/sync/shutdown
EOF
mkdir -p "$DIR/master/conf/sync"
echo "$DIR/master/conf/sync/shutdown" > "$DIR/master/conf/sync/shutdown.path"

ADM=("$BIN/csyncadm" -C "$DIR/master/imapd.conf")
echo "== master: sample mail delivered with csyncadm"
count=0
for user in alice bob carol; do
    "${ADM[@]}" create "user.$user" >/dev/null
    "${ADM[@]}" create "user.$user.Archive" >/dev/null
    "${ADM[@]}" subscribe "$user" "user.$user.Archive" >/dev/null
    for i in $(seq 1 20); do
        folder="user.$user"; [ $((i % 4)) = 0 ] && folder="user.$user.Archive"
        printf 'From: sender%s@example.com\r\nTo: %s@example.com\r\nSubject: sample %s for %s\r\nDate: Mon, 1 Jan 2024 10:%02d:00 +0000\r\nMessage-ID: <%s.%s@example.com>\r\n\r\nHello %s, this is message %s.\r\n' \
            "$i" "$user" "$i" "$user" "$i" "$i" "$user" "$user" "$i" \
            | "${ADM[@]}" deliver "$folder" >/dev/null
        count=$((count + 1))
    done
    "${ADM[@]}" flags "user.$user" 1:5 +'\Seen' >/dev/null
done
"${ADM[@]}" quota user.alice --storage 102400 >/dev/null
echo "   $count messages for alice, bob, carol (INBOX and Archive), flags, a quota"

echo "== master: rolling sync_client"
"$BIN/sync_client" -C "$DIR/master/imapd.conf" -R -v > "$DIR/client.out" 2> "$DIR/client.log" &
echo $! > "$DIR/client.pid"

replica_messages() {
    "$BIN/csyncadm" -C "$DIR/replica/imapd.conf" mailboxes --no-header 2>/dev/null \
        | awk -F'\t' '{n += $6} END {print n + 0}'
}
start=$(date +%s.%N)
for _ in $(seq 600); do
    got="$(replica_messages)"
    printf '\r   replica has %s of %s messages' "$got" "$count"
    [ "$got" -ge "$count" ] && break
    sleep 0.1
done
echo
[ "$(replica_messages)" -ge "$count" ] || { echo "the replica did not catch up; see $DIR/client.log" >&2; exit 1; }
awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "   caught up in %.2f s\n", b - a }'

echo "== lag: one more delivery on the master, timed until the replica has it"
before="$(replica_messages)"
t0=$(date +%s.%N)
printf 'From: x@example.com\r\nSubject: lag probe\r\n\r\nhi\r\n' | "${ADM[@]}" deliver user.alice >/dev/null
for _ in $(seq 2000); do
    [ "$(replica_messages)" -gt "$before" ] && break
    sleep 0.005
done
awk -v a="$t0" -v b="$(date +%s.%N)" \
    'BEGIN { printf "   delivered on the master -> visible on the replica: %.0f ms\n", (b - a) * 1000 }'

cat <<EOF

The pair is running:
  replica  sync_server  pid $(cat "$DIR/server.pid")  127.0.0.1:$PORT   config $DIR/replica/imapd.conf   log $DIR/server.log
  master   sync_client  pid $(cat "$DIR/client.pid")  rolling (-R)      config $DIR/master/imapd.conf    log $DIR/client.log
Try:
  $BIN/csyncadm -C $DIR/master/imapd.conf flags user.bob 1 +'\\Flagged'
  $BIN/csyncadm -C $DIR/replica/imapd.conf show user.bob
  $BIN/sync_client -C $DIR/master/imapd.conf --verify -A
Stop it with:
  $0 stop $DIR
EOF
