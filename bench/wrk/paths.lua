-- wrk: GET a request path picked at random from a file (one path a line, relative to the URL's
-- path, e.g. "Patient/123" or "Observation?subject=Patient/123").
--   wrk -t2 -c8 -d10s -H 'Authorization: Bearer dev-la-token' -s bench/wrk/paths.lua \
--       http://127.0.0.1:PORT/fhir -- PATHS_FILE
-- The server needs a bearer token on every request: give it with -H as above (bench/authz.py does),
-- or set BENCH_TOKEN in the environment.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(here .. "report.lua")

local threads = {}
local paths = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1] or error("paths.lua needs the paths file after --")
  for line in io.lines(path) do
    if #line > 0 then paths[#paths + 1] = line end
  end
  if #paths == 0 then error("no paths in " .. path) end
  math.randomseed(os.time() * 16 + (tid or 0))
  wrk.headers["Accept"] = "application/fhir+json"
  if os.getenv("BENCH_TOKEN") and not wrk.headers["Authorization"] then
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
  end
end

function request()
  return wrk.format("GET", wrk.path .. "/" .. paths[math.random(#paths)])
end

done = report.done
