-- wrk: GET Patient/{id} with ids picked at random from a file of existing ids (one a line).
--   wrk -t2 -c8 -d10s -H 'Authorization: Bearer dev-admin-token' -s bench/wrk/read.lua \
--       http://127.0.0.1:PORT/fhir/Patient -- IDS_FILE
-- The server needs a bearer token on every request: give it with -H as above (bench/run.py does),
-- or set BENCH_TOKEN in the environment.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(here .. "report.lua")

local threads = {}
local ids = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1] or error("read.lua needs the ids file after --")
  for line in io.lines(path) do
    if #line > 0 then ids[#ids + 1] = line end
  end
  if #ids == 0 then error("no ids in " .. path) end
  math.randomseed(os.time() * 16 + (tid or 0))
  wrk.headers["Accept"] = "application/fhir+json"
  if os.getenv("BENCH_TOKEN") and not wrk.headers["Authorization"] then
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
  end
end

function request()
  return wrk.format("GET", wrk.path .. "/" .. ids[math.random(#ids)])
end

done = report.done
