-- POST prebuilt JSON bodies in turn, cycling through them; print one JSON summary line.
--
--   wrk -t1 -c32 -d15s --latency -s post_bodies.lua URL -- BODIES_FILE
--
-- BODIES_FILE holds one JSON request body per line (written by benchmarks/serving.py).
-- Every request is formatted once in init(), so wrk spends its CPU on sending, not on Lua.

local requests = {}
local index = 0

function init(args)
  local path = args[1]
  if not path then
    error("usage: wrk ... -s post_bodies.lua URL -- BODIES_FILE")
  end
  for line in io.lines(path) do
    if #line > 0 then
      local headers = { ["Content-Type"] = "application/json" }
      requests[#requests + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  if #requests == 0 then
    error("no request bodies in " .. path)
  end
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, _)
  local e = summary.errors
  -- The latency distribution as 1,000 quantiles, so that runs can be pooled afterwards.
  local quantiles = {}
  for i = 1, 1000 do
    quantiles[i] = tostring(latency:percentile(i / 10))
  end
  io.write(string.format(
    '\nWRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, '
      .. '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, '
      .. '"mean_us": %.1f, "p50_us": %d, "p99_us": %d, "max_us": %d, "quantiles_us": [%s]}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(99), latency.max,
    table.concat(quantiles, ",")))
end
