-- wrk script: POST to the path given as the first argument, each request signed with
-- the next pre-minted token from the file given as the second (tokens are minted by
-- `floors -mint`, since wrk's Lua cannot sign HS256). Counts non-2xx answers.
local tokens = {}
local i = 0
function init(args)
  path = args[1]
  for line in io.lines(args[2]) do tokens[#tokens + 1] = line end
end
function request()
  i = i + 1
  local tok = tokens[(i % #tokens) + 1]
  return wrk.format("POST", path, {["Authorization"] = "JWT " .. tok, ["Content-Type"] = "application/json"}, "{}")
end
