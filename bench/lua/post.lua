-- wrk script: POST one fixed JSON body on every request, count 2xx and non-2xx in response(),
-- remember the X-Request-ID of every 2xx (the correctness check matches them to usage events)
-- and print one machine-readable line in done().
--
-- Arguments after `--`: <body file> <file for the 2xx request ids, or "-"> [Header: value]...

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local handle = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = handle:read("*a")
  handle:close()
  wrk.headers["Content-Type"] = "application/json"
  for index = 3, #args do
    local name, value = string.match(args[index], "^([^:]+):%s*(.*)$")
    wrk.headers[name] = value
  end
  ids_file = args[2]
  ok, bad, ids, statuses = 0, 0, {}, {}
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    if ids_file ~= "-" then
      ids[ok] = headers["x-request-id"] or "missing"
    end
  else
    bad = bad + 1
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total_ok, total_bad, by_status = 0, 0, {}
  local out = nil
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_bad = total_bad + thread:get("bad")
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
    local path = thread:get("ids_file")
    if path ~= "-" then
      out = out or assert(io.open(path, "w"))
      for _, id in ipairs(thread:get("ids")) do
        out:write(id, "\n")
      end
    end
  end
  if out then
    out:close()
  end
  local parts = {}
  for status, count in pairs(by_status) do
    table.insert(parts, string.format('"%d":%d', status, count))
  end
  local percentiles = {}
  for _, p in ipairs({50, 75, 90, 99, 99.9}) do
    table.insert(percentiles, string.format('"%s":%d', tostring(p), latency:percentile(p)))
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,"ok":%d,"non_2xx":%d,"statuses":{%s},'
    .. '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
    .. '"latency_us":{"min":%d,"max":%d,"mean":%.1f,"stdev":%.1f,"p":{%s}}}\n',
    summary.duration, summary.requests, summary.bytes, total_ok, total_bad, table.concat(parts, ","),
    errors.connect, errors.read, errors.write, errors.timeout,
    latency.min, latency.max, latency.mean, latency.stdev, table.concat(percentiles, ",")))
end
