-- orders.lua: wrk script for POST /v1/orders with "wait": true and an
-- idempotency key that never repeats (a repeated key answers from the stored
-- order without running a saga). Counts the answers that are
-- ORDER_STATUS_CONFIRMED; anything else is "other".
--
--   USER_ID=... wrk -t2 -c64 -d8s -s bench/orders.lua http://127.0.0.1:18080
--
-- The products PROBE-0 ... PROBE-9 must exist with enough stock
-- (bench/probe.sh creates them).
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  n, confirmed, other, run = 0, 0, 0, tostring(os.time())
  user = os.getenv("USER_ID")
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function request()
  n = n + 1
  local body = string.format('{"userId":"%s","items":[{"sku":"PROBE-%d","quantity":1}],'
    .. '"paymentToken":"tok_approve","idempotencyKey":"probe-%s-%d-%d","wait":true}', user, n % 10, run, tid, n)
  return wrk.format(nil, "/v1/orders", nil, body)
end

function response(status, headers, body)
  if status == 200 and body:find("ORDER_STATUS_CONFIRMED", 1, true) then
    confirmed = confirmed + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local c, o = 0, 0
  for _, t in ipairs(threads) do c, o = c + t:get("confirmed"), o + t:get("other") end
  io.write(string.format("confirmed %d, other %d, p50 %.1f ms, p99 %.1f ms\n",
    c, o, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
