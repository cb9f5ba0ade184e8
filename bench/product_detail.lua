-- wrk script: GET /api/v1/products/{id} with a uniformly random id per
-- request (each thread its own random sequence).
--   wrk -t2 -c100 -d10s --latency -s bench/product_detail.lua http://127.0.0.1:18081 -- [min_id] [max_id] [hot_n]
-- With hot_n, the id is uniformly random among a fixed "hot set" of hot_n
-- products spread over min_id..max_id (the same set as bench/journey.lua's;
-- what the cached measurement uses, its cache warmed beforehand).
-- Pointed at the nginx reference, the same requests get a static body.
-- done() prints one machine-readable "BENCH k=v ..." line for bench/run.sh.

local threads = 0
function setup(thread)
	threads = threads + 1
	thread:set("thread_no", threads)
end

local lo, hi, hot_n = 1, 1000000, 0
local pre = "GET /api/v1/products/"
local post = " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

function init(args)
	lo = tonumber(args[1]) or lo
	hi = tonumber(args[2]) or hi
	hot_n = tonumber(args[3]) or 0
	math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
	for _ = 1, 10 do math.random() end
end

-- keep in step with hot() in bench/journey.lua
local function hot(k)
	return lo + (k * 104729 + 4242) % (hi - lo + 1)
end

function request()
	if hot_n > 0 then
		return pre .. hot(math.random(0, hot_n - 1)) .. post
	end
	return pre .. math.random(lo, hi) .. post
end

function done(summary, latency, requests)
	local e = summary.errors
	io.write(string.format(
		"BENCH requests=%d duration_us=%d bytes=%d p50_us=%.0f p99_us=%.0f max_us=%.0f " ..
		"connect=%d read=%d write=%d timeout=%d status=%d\n",
		summary.requests, summary.duration, summary.bytes,
		latency:percentile(50), latency:percentile(99), latency.max,
		e.connect, e.read, e.write, e.timeout, e.status))
end
