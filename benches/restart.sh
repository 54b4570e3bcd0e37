#!/usr/bin/env bash
# benches/restart.sh BIN EVENTS PORT [EVERY]: stores EVENTS 128-byte events in a fresh data dir (esc serve on
# embedded defaults, esc bench batch 1 x64 x4), stops the server (SIGTERM), then measures restart to
# serving: from starting `BIN serve` again to the first acked publish (esc bench --events 1, retried
# every 10 ms), twice. With EVERY the storing run prints a line per EVERY events (events/s, worst ack,
# server RSS) and the server's "snapshot saved" lines are summed up (each step's mean/max ms, snapshot bytes).
# STOP=kill stops the server with SIGKILL instead (after storing and after each restart): the restart
# then replays the log after the last snapshot, as after a crash. FROM=DIR starts from a copy of the
# data dir DIR (a stopped member's, e.g. kept with KEEP=DIR) and stores EVENTS more on top, so big
# data is stored once and each binary under test only stops and restarts it.
# SERVE_ARGS: more `esc serve` arguments, e.g. SERVE_ARGS="--config retention.toml".
set -u
bin=$1; n=$2; port=$3; dir=$(mktemp -d)
sig=TERM; [ "${STOP:-term}" = kill ] && sig=KILL
[ -n "${FROM:-}" ] && cp -a "$FROM" $dir/data
serve() { $bin serve --listen 127.0.0.1:$port --set cluster.data_dir=$dir/data --set cluster.raft_listen=127.0.0.1:$((port+100)) ${SERVE_ARGS:-} >>$dir/serve.log 2>&1 & pid=$!; }
serve; sleep 1.5
every=${4:-0}
report=(); [ "$every" != 0 ] && report=(--report-every "$every" --server-pid "$pid")
timeout ${BENCH_TIMEOUT:-3000} $bin bench --addr 127.0.0.1:$port --batch 1 --pipeline 64 --connections 4 --events $n "${report[@]}" 2>&1 | grep -E 'acked|latency'
echo "snapshots saved: $(grep -c 'snapshot saved' $dir/serve.log); per step (ms, and bytes) mean/max:" \
  $(grep 'snapshot saved' $dir/serve.log | grep -o '[a-z_]*ms=[0-9]*\|bytes=[0-9]*' | awk -F= '{n[$1]++; s[$1]+=$2; if ($2>m[$1]) m[$1]=$2} END {for (k in n) printf "%s=%.0f/%d ", k, s[k]/n[k], m[k]}')
kill -$sig $pid; wait $pid 2>/dev/null
echo "stopped with SIG$sig; data dir: $(du -sh $dir/data | cut -f1)"
for round in 1 2; do
  t0=$(date +%s%N); serve
  until timeout 2 $bin bench --addr 127.0.0.1:$port --batch 1 --pipeline 1 --connections 1 --events 1 >/dev/null 2>&1; do
    sleep 0.01
    if [ $(( ($(date +%s%N) - t0) / 1000000 )) -gt 60000 ]; then echo "not serving after 60 s"; break; fi
  done
  t1=$(date +%s%N)
  timeout 2 $bin bench --addr 127.0.0.1:$port --batch 1 --pipeline 1 --connections 1 --events 1 >/dev/null 2>&1
  t2=$(date +%s%N)
  echo "restart $round: serving (first publish acked) $(( (t1 - t0) / 1000000 )) ms after start; one probe on a running server takes $(( (t2 - t1) / 1000000 )) ms"
  kill -$sig $pid; wait $pid 2>/dev/null
done
[ -n "${KEEP:-}" ] && rm -rf "$KEEP" && cp -a $dir/data "$KEEP"
rm -rf $dir
