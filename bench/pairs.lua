-- wrk script: POST to the path given as the first argument a pre-minted request
-- from the file given as the second (token TAB body a line, minted by
-- `atlassian mint`). Thread t of n (the third argument) sends lines t, t+n, ...
-- so no two threads send the same token. A line is sent once; if a thread runs
-- out it starts over and done() reports the repeats (the receiver acknowledges
-- a repeated token as a copy, without applying it again).
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
local reqs = {}
local i = 0
repeats = 0
function init(args)
  path = args[1]
  local n = tonumber(args[3])
  local k = 0
  for line in io.lines(args[2]) do
    if k % n == tid then
      local tab = line:find("\t", 1, true)
      reqs[#reqs + 1] = wrk.format("POST", path,
        {["Authorization"] = "JWT " .. line:sub(1, tab - 1), ["Content-Type"] = "application/json"},
        line:sub(tab + 1))
    end
    k = k + 1
  end
end
function request()
  i = i + 1
  if i > #reqs then
    repeats = repeats + 1
  end
  return reqs[((i - 1) % #reqs) + 1]
end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("repeats") end
  if total > 0 then io.stderr:write("pairs.lua: " .. total .. " requests repeated a token\n") end
  io.write("repeated tokens: " .. total .. "\n")
end
