-- wrk script of bench/bt_tracker.py: HTTP announces of a random info-hash among those listed
-- in the file given after "--" (40 hex digits a line), with a random 20-byte peer id, a random
-- port and, at random, a seeder (left=0) or a leecher (left=1 GiB); compact, numwant=50.
-- The same script and seeds go to every tracker measured.
local counter = 0
local threads = {}
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  threads[counter] = thread
end

local hashes = {}
function init(args)
  math.randomseed(7000 + (tid or 0))
  for line in io.lines(args[1]) do
    if #line == 40 then hashes[#hashes + 1] = (line:gsub("..", "%%%0")) end
  end
end

function request()
  local h = hashes[math.random(#hashes)]
  local pid = string.format("-BENCH0-%06d%06d", math.random(0, 999999), math.random(0, 999999))
  local port = math.random(1024, 65535)
  local left = (math.random(2) == 1) and "0" or "1073741824"
  return wrk.format("GET", "/announce?info_hash=" .. h .. "&peer_id=" .. pid .. "&port=" .. port ..
    "&uploaded=0&downloaded=0&left=" .. left .. "&compact=1&numwant=50")
end

local failures = 0
function response(status, headers, body)
  if status ~= 200 or body:find("failure reason", 1, true) then failures = failures + 1 end
end

-- Answers that were not a 200 with peers (a failure reason, a 4xx): counted per thread, summed here.
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + (thread:get("failures") or 0) end
  io.write(string.format("FAILED_ANSWERS %d\n", total))
end
