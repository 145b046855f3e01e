# common.sh - shared shell helpers for tests/cyrus (sourced, not run).
# shellcheck shell=bash

CYRUS_TOOLKIT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CYRUS_BIN="${CYRUS_BIN:-/usr/lib/cyrus/bin}"
SASLPASSWD2="${SASLPASSWD2:-$(command -v saslpasswd2 2>/dev/null || echo /usr/sbin/saslpasswd2)}"
CI_APT_PACKAGES="cyrus-imapd cyrus-common cyrus-replication cyrus-clients sasl2-bin libsasl2-modules openssl python3 gcc libc6-dev"

die() { echo "cyrus-test: ERROR: $*" >&2; exit 1; }
note() { echo "cyrus-test: $*" >&2; }

# Fail loudly (never skip) when the real Cyrus is not there.
require_cyrus() {
    local missing="" p
    for p in master imapd lmtpd timsieved ctl_cyrusdb sync_client sync_server; do
        [ -x "$CYRUS_BIN/$p" ] || missing="$missing $CYRUS_BIN/$p"
    done
    [ -x "$SASLPASSWD2" ] || missing="$missing saslpasswd2"
    command -v python3 >/dev/null 2>&1 || missing="$missing python3"
    if [ -n "$missing" ]; then
        die "Cyrus IMAPd 3.6 is not installed (missing:$missing).
  Install it with:  apt-get install -y --no-install-recommends $CI_APT_PACKAGES
  (or set CYRUS_BIN to the directory holding master/imapd/sync_server)"
    fi
}

abspath() {
    case "$1" in
        /*) printf '%s\n' "${1%/}" ;;
        *) printf '%s/%s\n' "$(pwd)" "${1%/}" ;;
    esac
}

is_root() { [ "$(id -u)" = 0 ]; }

# Load DIR/instance.env into the environment (CYRUS_* variables).
load_instance() {
    local dir="$1"
    [ -f "$dir/instance.env" ] || die "$dir is not a Cyrus test instance (no instance.env); run: cyrus-instance.sh start $dir ROLE PORTBASE"
    # shellcheck disable=SC1091
    . "$dir/instance.env"
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# pid_is_ours PID PATTERN: the process exists and its command line mentions
# PATTERN (guards against a recycled pid in a stale pid file).
pid_is_ours() {
    local pid="$1" pat="$2"
    pid_alive "$pid" || return 1
    [ -r "/proc/$pid/cmdline" ] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pat"
}

# True if something already holds 127.0.0.1:PORT (SO_REUSEADDR like Cyrus
# master, so TIME_WAIT leftovers of a previous run do not count).
port_busy() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
EOF
}

# wait_port PORT SECONDS: until something accepts on 127.0.0.1:PORT.
wait_port() {
    python3 - "$1" "${2:-30}" <<'EOF'
import socket, sys, time
port, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)
EOF
}

# Environment for any Cyrus process of the loaded instance: the syslog
# shim (if it was built) and, when not root, the user Cyrus should "become".
cyrus_env() {
    if [ -s "$CYRUS_DIR/lib/logshim.so" ]; then
        export LD_PRELOAD="$CYRUS_DIR/lib/logshim.so${LD_PRELOAD:+:$LD_PRELOAD}"
        export CYRUS_TEST_LOG="$CYRUS_LOG"
    fi
}
