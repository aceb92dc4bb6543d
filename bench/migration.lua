-- wrk script: POST AMP webhook events to the path given as the first argument,
-- signed with the token in the file given as the second (token TAB clientKey,
-- from `atlassian mint -kind migration`; the qsh covers method and path only).
-- Every request has a messageId of its own, so each is a real enqueue rather
-- than an acknowledged duplicate.
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
local i = 0
function init(args)
  path = args[1]
  local line = io.lines(args[2])()
  local tab = line:find("\t", 1, true)
  token = line:sub(1, tab - 1)
  ck = line:sub(tab + 1)
  run = args[3] or "r"
end
function request()
  i = i + 1
  local id = run .. "-" .. tid .. "-" .. i
  local body = '{"eventType":"listener-triggered","transferId":"tr-' .. id .. '","messageId":"m-' .. id ..
    '","migrationDetails":{"migrationId":"mig-1","jiraClientKey":"' .. ck .. '","confluenceClientKey":"unknown"}}'
  return wrk.format("POST", path, {["Authorization"] = "JWT " .. token, ["Content-Type"] = "application/json"}, body)
end
