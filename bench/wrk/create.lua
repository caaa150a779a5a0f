-- wrk: POST a new synthetic Patient on every request.
--   wrk -t2 -c8 -d10s -H 'Authorization: Bearer dev-admin-token' -s bench/wrk/create.lua \
--       http://127.0.0.1:PORT/fhir/Patient -- NINE_DIGIT_START
-- The server needs a bearer token on every request: give it with -H as above (bench/run.py does),
-- or set BENCH_TOKEN in the environment.
-- Each request gets its own NHS number from the 999 test range (valid modulus-11 check digit),
-- starting at the nine-digit prefix given after "--" (threads take disjoint blocks of 100000).
-- Names are invented from syllables.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(here .. "report.lua")

local threads = {}
local start = 999400000
local counter = 0

local heads = {"Brack", "Calder", "Dunmer", "Elswin", "Farrow", "Gorst", "Hallam", "Kestle", "Lanyon"}
local tails = {"ford", "wick", "thorne", "combe", "stead", "hurst"}
local given = {"Arlo", "Bryn", "Cassia", "Dara", "Ember", "Greer", "Isla", "Lark", "Wren", "Zeph"}

local template = [[{"resourceType":"Patient",]] ..
  [["meta":{"profile":["https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]},]] ..
  [["text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>%s %s, NHS number %s</p></div>"},]] ..
  [["identifier":[{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"%s"},]] ..
  [[{"system":"https://fhir.lac-bench.example.org/Id/child-reference","value":"WRK-%s"}],]] ..
  [["active":true,"name":[{"use":"official","family":"%s","given":["%s"]}],]] ..
  [["telecom":[{"system":"phone","value":"07700 900%03d","use":"mobile"}],]] ..
  [["gender":"%s","birthDate":"20%02d-%02d-%02d",]] ..
  [["address":[{"use":"home","line":["%d Lantern Lane"],"city":"Examplebury","postalCode":"ZZ99 3WZ","country":"GB"}],]] ..
  [["contact":[{"relationship":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0131","code":"C","display":"Emergency Contact"}]}],]] ..
  [["name":{"family":"%s","given":["%s"]}}],]] ..
  [["generalPractitioner":[{"reference":"Organization/bench-org-2"}],]] ..
  [["managingOrganization":{"reference":"Organization/bench-org-1"}}]]

local function nhs_number(nine)
  local s = tostring(nine)
  local total = 0
  for i = 1, 9 do
    total = total + tonumber(s:sub(i, i)) * (11 - i)
  end
  local check = 11 - total % 11
  if check == 11 then check = 0 end
  if check == 10 then return nil end
  return s .. check
end

local function pick(list)
  return list[math.random(#list)]
end

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  if args[1] then start = tonumber(args[1]) end
  math.randomseed(os.time() + (tid or 0))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/fhir+json"
  wrk.headers["Accept"] = "application/fhir+json"
  if os.getenv("BENCH_TOKEN") and not wrk.headers["Authorization"] then
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
  end
end

function request()
  local nhs
  repeat
    counter = counter + 1
    nhs = nhs_number(start + (tid or 0) * 100000 + counter)
  until nhs
  local family = pick(heads) .. pick(tails)
  local first = pick(given)
  local body = string.format(template, first, family:upper(), nhs, nhs, nhs, family, first,
    math.random(0, 999), (math.random(2) == 1) and "female" or "male",
    math.random(6, 21), math.random(1, 12), math.random(1, 28), math.random(1, 199),
    pick(heads) .. pick(tails), pick(given))
  return wrk.format(nil, nil, nil, body)
end

done = report.done
