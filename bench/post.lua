-- wrk script of bench/run.py: POST a command with wait to devices PREFIX000000 .. PREFIX(COUNT-1), in turn.
-- wrk -t1 -c50 -d10s --latency -s bench/post.lua http://127.0.0.1:8080 -- PREFIX COUNT
local prefix, count, counter = "b-", 100, 0

function init(args)
  prefix = args[1] or prefix
  count = tonumber(args[2] or count)
end

function request()
  counter = counter + 1
  local path = string.format("/devices/%s%06d/commands", prefix, counter % count)
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, '{"instruct":"0x10"}')
end
