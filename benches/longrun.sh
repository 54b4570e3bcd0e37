#!/usr/bin/env bash
# benches/longrun.sh BIN EVENTS PORT [EVERY] [BATCH]: esc serve (embedded defaults, fresh data dir) + esc bench
# (BATCH events per frame, default 1; x64 in flight x4 connections) with a line per EVERY (default 250k) events.
# SNAPSHOTS=1 also prints the server's "snapshot saved" lines (each step's milliseconds).
set -u
bin=$1; n=$2; port=$3; dir=$(mktemp -d)
$bin serve --listen 127.0.0.1:$port --set cluster.data_dir=$dir/data --set cluster.raft_listen=127.0.0.1:$((port+100)) >$dir/serve.log 2>&1 &
pid=$!
sleep 1.5
timeout ${BENCH_TIMEOUT:-600} $bin bench --addr 127.0.0.1:$port --batch ${5:-1} --pipeline 64 --connections 4 --events $n --report-every ${4:-250000} --server-pid $pid 2>&1 | tail -n 40
[ "${SNAPSHOTS:-0}" = 1 ] && grep "snapshot saved" $dir/serve.log | sed "s/.*apply: //"
echo "data dir: $(du -sh $dir/data | cut -f1)"
kill -TERM $pid; wait $pid 2>/dev/null; rm -rf $dir
