-- wrk script of tests/system/test_system_rollout.py: POST /ping with a unique message per request
-- ("rollout <thread>-<n>"). Every answer is written, one line each, to
-- $ROLLOUT_OUT/thread-<thread>.txt:
--   ok <id> <message>      a 200, with the id ping returned and the message it echoed
--   status <code> <body>   anything else
-- and `done` prints wrk's BENCH_JSON summary line (services/loadgen/wrk/report.lua), whose
-- non2xx / connect / read / write / timeout counters the test asserts.
-- ROLLOUT_CONNECTION_CLOSE=1 sends `Connection: close` (a new connection per request).
-- Run from the repository root (for the dofile below).

local next_thread = 1

function setup(thread)
  thread:set("thread_no", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  local dir = os.getenv("ROLLOUT_OUT")
  assert(dir, "ROLLOUT_OUT is not set")
  out = assert(io.open(dir .. "/thread-" .. thread_no .. ".txt", "w"))
  -- One line per answer reaches the file at once: wrk may be stopped by a signal.
  out:setvbuf("line")
  sent = 0
  headers = { ["Content-Type"] = "application/json" }
  if os.getenv("ROLLOUT_CONNECTION_CLOSE") == "1" then
    headers["Connection"] = "close"
  end
end

function request()
  sent = sent + 1
  local body = string.format('{"msg": "rollout %d-%d"}', thread_no, sent)
  return wrk.format("POST", "/ping", headers, body)
end

function response(status, headers, body)
  if status == 200 then
    local id = body:match('"id"%s*:%s*"([^"]+)"') or "?"
    local content = body:match('"content"%s*:%s*"([^"]+)"') or "?"
    out:write("ok ", id, " ", content, "\n")
  else
    out:write("status ", status, " ", (body:gsub("\n", " ")), "\n")
  end
end

dofile("services/loadgen/wrk/report.lua")
