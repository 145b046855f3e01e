#!/usr/bin/env bash
# selftest.sh [PORTBASE] [WORKDIR] - prove the toolkit against real Cyrus:
# a real master (PORTBASE..+3) replicates into a real replica (PORTBASE+10..+13)
# with sync_client -u, -A, -R -1 and rolling -R; after each step dump.py must
# show identical state on both sides.  Prints PASS or FAIL; exit 0/1.
# Everything started here is stopped on exit (trap), also on failure.
# WORKDIR (default: a new /tmp/cyrus-selftest.XXXXXX) is removed on PASS
# unless KEEP=1; on FAIL it is kept for inspection.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
. "$HERE/common.sh"
require_cyrus

PB="${1:-24300}"
WORK="${2:-}"
if [ -z "$WORK" ]; then WORK="$(mktemp -d /tmp/cyrus-selftest.XXXXXX)"; fi
mkdir -p "$WORK"; WORK="$(abspath "$WORK")"
chmod 755 "$WORK"   # Cyrus (user cyrus) must be able to enter it
M="$WORK/master"; R="$WORK/replica"
T0=$(date +%s.%N)
RESULT=FAIL
STEP="setup"

finish() {
    local rc=$?
    set +e
    [ -f "$M/instance.env" ] && "$HERE/sync.sh" "$M" rolling-stop >/dev/null 2>&1
    [ -f "$M/instance.env" ] && "$HERE/cyrus-instance.sh" stop "$M"
    [ -f "$R/instance.env" ] && "$HERE/cyrus-instance.sh" stop "$R"
    local secs
    secs=$(python3 -c "import time; print(f'{time.time() - $T0:.1f}')")
    if [ "$RESULT" = PASS ] && [ $rc = 0 ]; then
        [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
        echo "PASS (cyrus selftest, ${secs}s)"
        exit 0
    fi
    echo "FAIL (cyrus selftest, step: $STEP, ${secs}s); work dir kept: $WORK" >&2
    echo "  logs: $M/log/ $R/log/ (cyrus.log = Cyrus syslog, sync-*.log = sync_client -v)" >&2
    echo "FAIL"
    exit 1
}
trap finish EXIT
trap 'exit 1' INT TERM

step() { STEP="$*"; echo "== $*"; }
ctl() { "$HERE/cyrusctl.py" "$M" "$@"; }
check_same() {
    step "compare master and replica ($1)"
    if ! "$HERE/dump.py" diff "$M" "$R" ${2:-}; then
        echo "dump differs after $1" >&2
        return 1
    fi
}

step "start replica ($((PB + 10))) and master ($PB)"
"$HERE/cyrus-instance.sh" start "$R" replica $((PB + 10)) --fresh
"$HERE/cyrus-instance.sh" start "$M" master "$PB" --sync-port $((PB + 12)) --fresh

step "changes on the master: 3 users, 30 messages, flags, expunge, folders, ACL, quota, annotations, seen, sieve"
ctl script <<'EOF'
adduser alice Work Archive
adduser bob Projects
adduser carol
# 24 messages by LMTP (round robin), 6 by IMAP APPEND = 30
deliver --to alice,bob,carol,alice+Work --count 24 --seed 7 --create
@alice append Archive --count 3 --seed 8 --flags "\Seen"
@bob append Projects --count 3 --seed 9
@alice store INBOX 1:3 +FLAGS \Seen \Flagged
@alice store INBOX 2 +FLAGS $Label1 Junk
@bob store INBOX 1:* +FLAGS \Seen
@bob store INBOX 2 -FLAGS \Seen
@carol store INBOX 1:* FLAGS \Answered
@alice expunge INBOX 4
@bob expunge INBOX 1:2
@alice create "Work/Sub Folder" Trash
@alice rename Archive Archive-2024
@carol create Tmp
@carol delete Tmp
@alice subscribe INBOX Work "Work/Sub Folder" Archive-2024
@bob subscribe INBOX Projects
@alice setacl Work bob lrsw
@alice setacl INBOX carol lr
setquota user/alice STORAGE 500000 MESSAGE 1000
setquota user/bob STORAGE 100000
@alice setmeta INBOX /shared/comment "alice's inbox"
@alice setmeta Work /private/comment "private note"
# seen state of another user: bob reads alice's shared folder
@bob store "Other Users/alice/Work" 1:3 +FLAGS \Seen
@alice sieve-put main --text 'require ["fileinto"];\nif header :contains "subject" "zzz" { fileinto "Work"; }\n'
@alice sieve-activate main
EOF
n=$("$HERE/dump.py" "$M" --no-bodies | grep -c '"uid":' || true)
[ "$n" -ge 25 ] || { echo "expected >= 25 messages on the master, found $n" >&2; exit 1; }

step "sync_client -u alice bob carol"
"$HERE/sync.sh" "$M" -u alice bob carol
check_same "-u"

step "more changes, then sync_client -A"
ctl script <<'EOF'
deliver --to carol,bob --count 4 --seed 10 --start 100
@carol store INBOX 1 +FLAGS \Seen
@bob rename Projects Projects-old
@alice move INBOX 5 Trash
@alice delete Trash
@carol setmeta INBOX /private/comment "carol was here"
@alice deleteacl INBOX carol
setquota user/carol MESSAGE 50
EOF
"$HERE/sync.sh" "$M" -A
check_same "-A"

step "a change, then sync_client -R -1 (one sync log file)"
ctl --as alice store INBOX 1 -FLAGS '\Flagged'
"$HERE/sync.sh" "$M" -R -1
check_same "-R -1"

step "rolling replication (sync_client -R in the background)"
"$HERE/sync.sh" "$M" rolling-start
ctl script <<'EOF'
deliver --to alice,bob --count 2 --seed 11 --start 200
@alice store INBOX 1:* +FLAGS $Rolling
@alice expunge Work 1
@bob unsubscribe Projects-old
@alice sieve-put second --text 'keep;\n'
@alice sieve-activate second
@alice setmeta INBOX /shared/comment NIL
deluser carol
EOF
"$HERE/sync.sh" "$M" rolling-wait 60
"$HERE/sync.sh" "$M" rolling-stop
check_same "rolling" --deleted
"$HERE/dump.py" "$M" --no-bodies --deleted | grep -q '"carol"' && { echo "carol still on the master" >&2; exit 1; }
"$HERE/dump.py" "$M" --no-bodies --deleted | grep -q 'DELETED.user.carol' || { echo "no tombstone for carol" >&2; exit 1; }

RESULT=PASS
