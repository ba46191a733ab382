-- The routes scenario's client: each request names the next host of
-- h0000.example.com ... h<N-1>.example.com in turn (N = the first script
-- argument, default 1), so a run spreads evenly over N host routes; the
-- requests are built once in init(), not per request. Reports like
-- wrk-report.lua (the same BENCH line).
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "wrk-report.lua")

local reqs, n, i = {}, 0, 0

init = function(args)
  n = tonumber(args[1]) or 1
  for k = 0, n - 1 do
    reqs[k + 1] = wrk.format(nil, wrk.path, {Host = string.format("h%04d.example.com", k)})
  end
end

request = function()
  i = i % n + 1
  return reqs[i]
end
