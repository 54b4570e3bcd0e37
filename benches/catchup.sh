#!/usr/bin/env bash
# benches/catchup.sh BIN EVENTS BASE [BATCH]: a three-member cluster of `BIN serve` on loopback (client ports
# BASE..BASE+2, Raft BASE+100.., metrics BASE+200..), EVENTS 128-byte events published to the leader with
# `esc bench` (BATCH events per frame, default 100; x8 in flight x4 connections), then one follower is
# removed (`esc admin remove`), stopped, its data dir wiped, started again with cluster.join = true and
# re-added (`esc admin add`). Times from the add until the follower has applied the leader's commit index
# and its snapshot install is complete (its /metrics: esc_catchup_completed_total, esc_raft_applied_index);
# MB/s = esc_catchup_bytes_total / that time. Then the same bytes by `cp -r` of the leader's data dir on
# the same disk (warm: the leader just wrote them, nothing is dropped from the page cache), with and without
# a `sync` of the copy. CHUNK=N sets cluster.catchup_chunk_bytes. Every process it starts is stopped on exit;
# each wait has a deadline.
set -u
bin=$(realpath "$1"); n=$2; base=$3; batch=${4:-100}
dir=$(mktemp -d); pids=(); token=catchup-bench-admin-token
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 50); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.2; done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$dir"
}
trap cleanup EXIT
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
metric() { curl -s --max-time 2 "http://127.0.0.1:$((base+199+$1))/metrics" | awk -v m="$2" '$1 == m { print $2; exit }'; }
members=""
for i in 1 2 3; do
  members+="{ id = $i, raft_addr = \"127.0.0.1:$((base+99+i))\", client_addr = \"127.0.0.1:$((base+i-1))\" },"
done
for i in 1 2 3; do
  cat >"$dir/node$i.toml" <<EOF
[node]
id = $i
[ingest]
listen = "127.0.0.1:$((base+i-1))"
anonymous_roles = ["publish", "consume"]
clients = [{ name = "bench-admin", token = "$token", roles = ["admin"] }]
metrics_listen = "127.0.0.1:$((base+199+i))"
[cluster]
cluster_id = "catchup-bench"
secret = "catchup-bench-secret-0123456789abcdef"
raft_listen = "127.0.0.1:$((base+99+i))"
data_dir = "$dir/node$i"
members = [ ${members%,} ]
${CHUNK:+catchup_chunk_bytes = $CHUNK}
EOF
done
serve() { "$bin" serve --config "$dir/node$1.toml" "${@:2}" >>"$dir/node$1.log" 2>&1 & pids+=($!); eval "pid$1=$!"; }
ready() { # ready N SECONDS: until member N's /ready answers 200
  local t=$(( $(now_ms) + $2 * 1000 ))
  until curl -sf --max-time 1 "http://127.0.0.1:$((base+199+$1))/ready" >/dev/null; do
    [ "$(now_ms)" -gt "$t" ] && { echo "member $1 not ready after $2 s"; tail -5 "$dir/node$1.log"; exit 1; }
    sleep 0.2
  done
}
for i in 1 2 3; do serve $i; done
for i in 1 2 3; do ready $i 30; done
all=127.0.0.1:$base,127.0.0.1:$((base+1)),127.0.0.1:$((base+2))
leader=$(for i in 1 2 3; do [ "$(metric $i esc_raft_is_leader)" = 1 ] && echo $i; done | head -1)
[ -z "$leader" ] && { echo "no leader"; exit 1; }
echo "leader: node $leader; publishing $n events (batch $batch x8 in flight x4 connections)"
timeout "${BENCH_TIMEOUT:-3000}" "$bin" bench --addr "127.0.0.1:$((base+leader-1))" --batch "$batch" --pipeline 8 \
  --connections 4 --events "$n" 2>&1 | grep -E 'acked|latency'
f=$(( leader % 3 + 1 ))
echo "leader data dir: $(du -sb "$dir/node$leader" | cut -f1) bytes ($(du -sh "$dir/node$leader" | cut -f1))"
"$bin" admin --addr "$all" --token "$token" remove --id "$f" || exit 1
eval "kill -TERM \$pid$f; wait \$pid$f 2>/dev/null"
rm -rf "$dir/node$f"
serve "$f" --set cluster.join=true
sleep 1
commit=$(metric "$leader" esc_raft_commit_index)
t0=$(now_ms)
"$bin" admin --addr "$all" --token "$token" add --id "$f" --raft-addr "127.0.0.1:$((base+99+f))" \
  --client-addr "127.0.0.1:$((base+f-1))" || exit 1
deadline=$(( t0 + ${CATCHUP_TIMEOUT:-1800} * 1000 ))
while :; do
  done_=$(metric "$f" esc_catchup_completed_total); applied=$(metric "$f" esc_raft_applied_index)
  [ "${done_:-0}" -ge 1 ] && [ "${applied:-0}" -ge "$commit" ] && break
  [ "$(now_ms)" -gt "$deadline" ] && { echo "not caught up: completed=$done_ applied=$applied commit=$commit"; exit 1; }
  sleep 0.1
done
t1=$(now_ms); ms=$(( t1 - t0 ))
bytes=$(metric "$f" esc_catchup_bytes_total); chunks=$(metric "$f" esc_catchup_chunks_total)
echo "catch-up: $ms ms from the add to applied >= $commit (leader's commit at the add); $bytes record bytes in $chunks chunks:" \
  "$(awk -v b="$bytes" -v t="$ms" 'BEGIN { printf "%.1f MB/s", b / 1e6 / (t / 1000) }')"
fb=$(du -sb "$dir/node$f" | cut -f1)
echo "follower data dir after: $fb bytes: $(awk -v b="$fb" -v t="$ms" 'BEGIN { printf "%.1f MB/s", b / 1e6 / (t / 1000) }')"
for s in "" sync; do
  t0=$(now_ms); cp -r "$dir/node$leader" "$dir/copy"; [ -n "$s" ] && sync -f "$dir/copy"; ms=$(( $(now_ms) - t0 ))
  copied=$(du -sb "$dir/copy" | cut -f1)
  echo "cp -r of the leader's data dir${s:+ + sync} (warm): $ms ms, $copied bytes:" \
    "$(awk -v b="$copied" -v t="$ms" 'BEGIN { printf "%.1f MB/s", b / 1e6 / (t / 1000) }')"
  rm -rf "$dir/copy"
done
