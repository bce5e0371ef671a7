-- The benchmark request of ../shared/bench/README.md, sent by wrk:
--   GET /api/v1/users/123 HTTP/1.1, Host (added by wrk), User-Agent: wrk, X-Api-Key: k
-- L7C_BENCH_HEAD_BYTES=N pads the head with X-Pad<k> fields to exactly N bytes
-- (request line, fields and the final CRLF). done() prints one JSON line (done
-- runs in a Lua state of its own, where init's padding is not seen).

wrk.method = "GET"
wrk.path = "/api/v1/users/123"
wrk.headers["User-Agent"] = "wrk"
wrk.headers["X-Api-Key"] = "k"

local max_field_value = 4000 -- below nginx's and HAProxy's per-line limits

-- L7C_BENCH_HEAD_FIELDS=PATH adds the field lines of a file of bench/heads/
-- (a browser's or an API client's realistic head, issue 15).
local fields = os.getenv("L7C_BENCH_HEAD_FIELDS")
if fields then
  for line in io.lines(fields) do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    if name then
      wrk.headers[name] = value
    end
  end
end

function init(args)
  local target = tonumber(os.getenv("L7C_BENCH_HEAD_BYTES") or "")
  if not target then
    return
  end
  local missing = target - #wrk.format()
  local k = 1
  while missing > 0 do
    local name = "X-Pad" .. k
    local overhead = #name + 4 -- ": " and CRLF
    local value_bytes = math.min(missing - overhead, max_field_value)
    if missing - overhead - value_bytes > 0 and missing - overhead - value_bytes < 12 then
      value_bytes = value_bytes - 12 -- leave room for one more whole field
    end
    if value_bytes < 1 then
      error("cannot pad the head to " .. target .. " bytes")
    end
    wrk.headers[name] = string.rep("a", value_bytes)
    missing = missing - overhead - value_bytes
    k = k + 1
  end
  if #wrk.format() ~= target then
    error("the padded head is " .. #wrk.format() .. " bytes, not " .. target)
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
