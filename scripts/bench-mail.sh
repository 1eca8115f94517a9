#!/bin/sh
# bench-mail.sh: the mail gateway benchmark of docs/benchmarks.md, all in one run on one
# machine: the spool's own ceiling (Go benchmark), then `samtal dev` (Dendrite and the gateway
# on SQLite) driven by internal/tools/mailload: a raw send loop and the accept and delivered
# rates over 8 connections for a minute, after the latency at a steady 20 mails/s, with the
# gateway's peak RSS; then the delivered rate of a burst drained to its end, between two raw
# send loops. Usage: [WAIT=5m] scripts/bench-mail.sh [DURATION]   (default 60s; WAIT:
# how long to wait for the events still missing after sending)
set -eu
DUR=${1:-60s}
cd "$(dirname "$0")/.."
WORK=$(mktemp -d /tmp/samtal-mailbench.XXXXXX)
export CGO_ENABLED=0
go build -tags goolm -o "$WORK/samtal" ./cmd/samtal
go build -tags goolm -o "$WORK/mailload" ./internal/tools/mailload

echo "== spool ceiling: durable commits of the same mails, no SMTP"
go test -tags goolm -run '^$' -bench BenchmarkSpoolCommit -benchtime 10s ./mailbridge/ | grep -E '^Benchmark|^cpu'

HSPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DNSPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SMTPPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Dendrite's own data goes to /dev/shm, as the tests' homeserver's does (its fsyncs are not
# what is measured: on this disk they cap it at about 30 sends/s, in memory it takes about
# 100, the issue's reference); the gateway's spool and outbox stay on disk in $WORK, with fsync.
HSDIR=$(mktemp -d /dev/shm/samtal-mailbench-hs.XXXXXX)
"$WORK/samtal" --log-level warn dev -dir "$WORK/dev" -homeserver-dir "$HSDIR" -port "$HSPORT" -smtp-port "$SMTPPORT" -dns "127.0.0.1:$DNSPORT" > "$WORK/dev.out" 2> "$WORK/dev.err" &
DEV=$!
trap 'kill $DEV 2>/dev/null; wait $DEV 2>/dev/null || true; rm -rf "$HSDIR"' EXIT
while ! grep -q swaks "$WORK/dev.out" 2>/dev/null; do
	kill -0 $DEV || { cat "$WORK/dev.err"; exit 1; }
	sleep 0.5
done
SMTP=$(sed -n 's/^  mail *smtp \([^,]*\),.*/\1/p' "$WORK/dev.out")
ROOM=$(cat "$WORK/dev/gateway/room")
export MAILLOAD_PASSWORD=$(cat "$WORK/dev/demo.password")
# The raw loop sends as another account than the reader's, as the gateway does: the homeserver
# counts the reader's notifications for those events, and skips that for the reader's own.
export MAILLOAD_RAW_PASSWORD=$("$WORK/samtal" dev user add -dir "$WORK/dev" -json rawsender | sed -n 's/.*"password":"\([^"]*\)".*/\1/p')
# The gateway's SPF and DMARC lookups go to mailload's loopback DNS server (-dns), which
# passes the sender: the machine's resolver is not what is measured.
LOAD="$WORK/mailload -dns 127.0.0.1:$DNSPORT -wait ${WAIT:-5m} -smtp $SMTP -to demo@samtal.localhost -homeserver http://127.0.0.1:$HSPORT -user demo -room $ROOM -pid $DEV"

# The steady load first, while the spool is empty; the saturating one after it leaves a
# backlog that would be measured as latency.
echo "== (c, d) a steady 20 mails/s for $DUR; a raw send loop first"
$LOAD -conns 8 -duration "$DUR" -rate 20 -raw 20s -raw-user rawsender
# The homeserver gets slower as its room grows (more events, more state to read per event), so
# the delivered rate is compared with raw loops on both sides of a drain: a burst of 5 s (about
# 10,000 mails), delivered to the last, with a raw loop before and after. Before the saturating
# run, which leaves a backlog that is still being delivered when this script ends.
echo "== (b) a burst of 5 s, delivered to the end, between two raw send loops"
$LOAD -conns 8 -duration 5s -raw 20s -raw-user rawsender -wait 5m | tee "$WORK/b.txt"
$LOAD -conns 1 -duration 0 -raw 20s -raw-user rawsender | tee -a "$WORK/b.txt"
awk '/^raw send loop/ { split($NF, r, "/"); raw[++n] = r[1] } /^delivered while sending/ { split($NF, d, "/"); after = d[1] }
	END { if (n == 2 && after > 0) printf "(b) drained %.1f/s; raw loops %.1f/s before, %.1f/s after: %.2fx their mean\n", after, raw[1], raw[2], after / ((raw[1] + raw[2]) / 2) }' "$WORK/b.txt"
echo "== (a, d) 8 connections, as fast as the gateway answers, for $DUR"
$LOAD -conns 8 -duration "$DUR" -raw 20s -raw-user rawsender
