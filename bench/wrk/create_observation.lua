-- wrk: POST a new body-weight Observation about a child picked at random from a file of Patient
-- ids (one a line).
--   wrk -t2 -c8 -d10s -H 'Authorization: Bearer dev-la-token' -s bench/wrk/create_observation.lua \
--       http://127.0.0.1:PORT/fhir/Observation -- IDS_FILE
-- The server needs a bearer token on every request: give it with -H as above (bench/authz.py does),
-- or set BENCH_TOKEN in the environment.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(here .. "report.lua")

local threads = {}
local ids = {}

local template = [[{"resourceType":"Observation","status":"final",]] ..
  [["category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],]] ..
  [["code":{"coding":[{"system":"http://loinc.org","code":"29463-7","display":"Body weight"}]},]] ..
  [["subject":{"reference":"Patient/%s"},"effectiveDateTime":"2026-%02d-%02d",]] ..
  [["valueQuantity":{"value":%d.%d,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"}}]]

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1] or error("create_observation.lua needs the ids file after --")
  for line in io.lines(path) do
    if #line > 0 then ids[#ids + 1] = line end
  end
  if #ids == 0 then error("no ids in " .. path) end
  math.randomseed(os.time() * 16 + (tid or 0))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/fhir+json"
  wrk.headers["Accept"] = "application/fhir+json"
  if os.getenv("BENCH_TOKEN") and not wrk.headers["Authorization"] then
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
  end
end

function request()
  local body = string.format(template, ids[math.random(#ids)], math.random(1, 10), math.random(1, 28),
    math.random(12, 80), math.random(0, 9))
  return wrk.format(nil, nil, nil, body)
end

done = report.done
