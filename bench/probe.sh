#!/usr/bin/env bash
# probe.sh: an independent check of the bench's REST-edge ratio and orders
# rate, with tools that are not Duet's: wrk (HTTP) and ghz (gRPC) against a
# `duet up` of its own, on loopback, bounded in time (~2 minutes).
#
#   bench/probe.sh                 # builds ./cmd/duet into a temporary directory
#   DUET_BIN=/path/to/duet bench/probe.sh
#
# It starts duet with a fresh data directory on free ports (its log to a
# file, as in production), creates a user and ten products, then, twice,
# the second round in the other order: wrk -> gateway GET /v1/users/{id},
# wrk -> the gateway's Connect procedure (a JSON POST to
# /duet.user.v1.UserService/GetUser) and ghz -> the user service's GetUser
# directly, 64 connections or callers for PROBE_SECONDS (8) each; then wrk
# posting orders (bench/orders.lua) twice. duet's CPU per
# request comes from /proc/<pid>/stat. Needs wrk (apt-get install wrk), ghz
# (go install github.com/bojand/ghz/cmd/ghz@v0.93.0), curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${PROBE_SECONDS:-8}"
for tool in wrk ghz curl python3; do
  command -v "$tool" >/dev/null || { echo "probe: $tool not found (see the comment at the top of $0)" >&2; exit 2; }
done

tmp=$(mktemp -d)
duet_pid=""
cleanup() {
  if [ -n "$duet_pid" ]; then kill "$duet_pid" 2>/dev/null || true; wait "$duet_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

bin="${DUET_BIN:-}"
if [ -z "$bin" ]; then
  go build -o "$tmp/duet" ./cmd/duet
  bin="$tmp/duet"
fi

any=127.0.0.1:0
"$bin" up --data-dir "$tmp/data" --http-addr $any --user-addr $any --order-addr $any \
  --payment-addr $any --inventory-addr $any --notification-addr $any \
  >"$tmp/banner" 2>"$tmp/duet.log" &
duet_pid=$!

http="" grpc_user=""
for _ in $(seq 1 200); do
  http=$(sed -n 's|^ *REST gateway *http://\([^ ]*\).*|\1|p' "$tmp/banner")
  grpc_user=$(sed -n 's|^ *gRPC user *\([^ ]*\).*|\1|p' "$tmp/banner")
  [ -n "$http" ] && [ -n "$grpc_user" ] && break
  kill -0 "$duet_pid" 2>/dev/null || { cat "$tmp/duet.log" >&2; echo "probe: duet exited" >&2; exit 1; }
  sleep 0.05
done
[ -n "$http" ] || { echo "probe: no banner from duet" >&2; exit 1; }
for _ in $(seq 1 200); do
  curl -sf "http://$http/readyz" >/dev/null && break
  sleep 0.05
done
curl -sf "http://$http/readyz" >/dev/null || { echo "probe: duet not ready" >&2; exit 1; }

user_id=$(curl -sS --fail-with-body -X POST "http://$http/v1/users" \
  -d '{"email":"probe@example.com","name":"Probe"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["user"]["id"])')
for i in $(seq 0 9); do
  curl -sS --fail-with-body -o /dev/null -X POST "http://$http/v1/products" \
    -d '{"sku":"PROBE-'"$i"'","name":"Probe '"$i"'","price":{"currencyCode":"USD","units":"100"},"stock":100000000}'
done

ticks=$(getconf CLK_TCK)
# cpu prints duet's user+system CPU time in clock ticks.
cpu() { awk '{print $14 + $15}' "/proc/$duet_pid/stat"; }
# per_request prints µs of duet's CPU per request.
per_request() { python3 -c "print(round(($2 - $1) * 1e6 / $ticks / $3, 1) if $3 else 'n/a (no answers)')"; }

echo "probe: $bin (repository at $(git rev-parse --short HEAD 2>/dev/null || echo unknown)), $(nproc) CPUs, ${secs}s per run, 64 connections"
# A Connect call of GetUser: the JSON POST a Connect client sends.
cat >"$tmp/connect.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"id":"' .. os.getenv("USER_ID") .. '"}'
LUA

# edge measures GetUser through the gateway with wrk (its arguments after
# the label), setting rps to its rate of 2xx answers.
edge() {
  local label=$1 c0 c1 out non2xx sockerr n ok
  shift
  c0=$(cpu)
  out=$(USER_ID=$user_id wrk -t2 -c64 -d"${secs}s" "$@") || { echo "probe: wrk failed ($label): $out" >&2; exit 1; }
  c1=$(cpu)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  sockerr=$(sed -n 's/^ *Socket errors: //p' <<<"$out")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  # Only 2xx answers count, on both sides: wrk's rate and count include
  # the others, which would make the gateway look faster and cheaper.
  n=${n:-0}
  ok=$(( n - ${non2xx:-0} ))
  rps=$(python3 -c "print(round(${rps:-0} * $ok / $n, 2) if $n else 0)")
  [ "$ok" -gt 0 ] || { echo "probe: wrk got no 2xx answer ($label): $out" >&2; exit 1; }
  printf '  %-30s %s req/s (2xx), duet %s µs CPU/request%s%s\n' "wrk -> $label" "$rps" "$(per_request "$c0" "$c1" "$ok")" \
    "${non2xx:+, non-2xx $non2xx}" "${sockerr:+, socket errors: $sockerr}"
}

# gateway sets gw_rps: REST's GET /v1/users/{id}.
gateway() { edge "gateway GetUser" "http://$http/v1/users/$user_id"; gw_rps=$rps; }
# connect sets connect_rps: the Connect procedure's JSON POST.
connect() { edge "gateway Connect GetUser" -s "$tmp/connect.lua" "http://$http/duet.user.v1.UserService/GetUser"; connect_rps=$rps; }

# direct measures GetUser on the user service with ghz, setting direct_rps.
direct() {
  local c0 c1 out n errs
  c0=$(cpu)
  out=$(ghz --insecure --call duet.user.v1.UserService.GetUser -d "{\"id\":\"$user_id\"}" \
    -c 64 -z "${secs}s" --format json "$grpc_user")
  c1=$(cpu)
  # ghz's rps counts every call, errors too: scaled to the OK answers, as
  # wrk's is to the 2xx. When its time is up ghz closes its connection
  # under the calls still in flight (at most one per caller: "transport is
  # closing"); those are not the server's failures.
  read -r direct_rps n errs < <(python3 -c 'import json,sys; r=json.load(sys.stdin); d=r.get("errorDistribution") or {}; ok=r.get("statusCodeDistribution",{}).get("OK",0); print(r["rps"]*ok/r["count"] if r.get("count") else 0, ok, sum(v for k,v in d.items() if "transport is closing" not in k and "Canceled" not in k))' <<<"$out") || true
  [ "${n:-0}" -gt 0 ] || { echo "probe: ghz got no OK answer from GetUser: $out" >&2; exit 1; }
  echo "  ghz -> user service GetUser    $(printf '%.0f' "$direct_rps") req/s (OK), duet $(per_request "$c0" "$c1" "$n") µs CPU/request, errors $errs"
}

# The sides take turns, and the second round starts from the other end,
# so neither REST nor direct gRPC always runs first; Connect, in the
# middle, as the bench has it.
for round in 1 2; do
  if [ "$round" = 1 ]; then gateway; connect; direct; else direct; connect; gateway; fi
  echo "  gateway/direct, round $round:     $(python3 -c "print(round($gw_rps / $direct_rps, 3))")"
  echo "  connect/direct, round $round:     $(python3 -c "print(round($connect_rps / $direct_rps, 3))")"
done

for round in 1 2; do
  c0=$(cpu)
  out=$(USER_ID=$user_id wrk -t2 -c64 -d"${secs}s" -s bench/orders.lua "http://$http")
  c1=$(cpu)
  line=$(grep '^confirmed' <<<"$out" || true)
  confirmed=$(awk '{print $2}' <<<"${line//,/}")
  # wrk's own rate times the confirmed share of its answers.
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  [ "${n:-0}" -gt 0 ] || { echo "probe: wrk got no answer to POST /v1/orders: $out" >&2; exit 1; }
  [ -n "$confirmed" ] || { echo "probe: no count from bench/orders.lua: $out" >&2; exit 1; }
  echo "  wrk -> POST /v1/orders         $(python3 -c "print(round($rps * $confirmed / $n))") confirmed/s ($line), duet $(per_request "$c0" "$c1" "$confirmed") µs CPU/order"
done
