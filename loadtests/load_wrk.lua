-- wrk script for the firmlog server benchmarks (bench_server_write.py, bench_server_read.py).
--
--   wrk ... -s loadtests/load_wrk.lua http://127.0.0.1:PORT -- MODE ARG
--
-- MODE post PREFIX [PATH]
--                    POST PATH (default /v1/entries) with pre-generated signed entries, each
--                    sent once: thread k reads PREFIX.<k-1> ("<length>\n<bytes>" records)
--                    and stops when its file is used up.
-- MODE proof SIZE    GET /v1/proof/inclusion?index=I&tree_size=SIZE, I uniform in [0, SIZE).
-- MODE tile COUNT    GET /tile/0/<N>, N uniform in [0, COUNT): full level-0 hash tiles.
-- MODE get PATH      GET PATH (the bare handler).
--
-- done() prints one line "WRK_JSON {...}" with the request count, errors and
-- latency percentiles in microseconds, for the Python driver to parse.

local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

local mode, arg, file, limit
local post_path = "/v1/entries"
local post_headers = { ["Content-Type"] = "text/plain" }

-- tlog-tiles index encoding: 1234067 -> x001/x234/067
local function tile_index(n)
  local s = string.format("%03d", n % 1000)
  n = math.floor(n / 1000)
  while n > 0 do
    s = string.format("x%03d/", n % 1000) .. s
    n = math.floor(n / 1000)
  end
  return s
end

function init(args)
  mode, arg = args[1], args[2]
  if mode == "post" then
    file = assert(io.open(arg .. "." .. (id - 1), "rb"))
    post_path = args[3] or post_path
  elseif mode == "proof" or mode == "tile" then
    limit = assert(tonumber(arg))
    math.randomseed(os.time() * 1000 + id)
  elseif mode ~= "get" then
    error("unknown mode " .. tostring(mode))
  end
end

function request()
  if mode == "post" then
    local header = file and file:read("*l")
    if header == nil then
      -- Every entry of this thread has been sent: stop rather than resend one.
      wrk.thread:stop()
      return wrk.format("GET", "/healthz")
    end
    local body = file:read(tonumber(header))
    return wrk.format("POST", post_path, post_headers, body)
  elseif mode == "proof" then
    local i = math.random(0, limit - 1)
    return wrk.format("GET", "/v1/proof/inclusion?index=" .. i .. "&tree_size=" .. limit)
  elseif mode == "tile" then
    return wrk.format("GET", "/tile/0/" .. tile_index(math.random(0, limit - 1)))
  end
  return wrk.format("GET", arg)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"p50": %d, "p90": %d, '
      .. '"p99": %d, "max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
