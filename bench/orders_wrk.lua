-- wrk script for bench/orders.sh: one request shape, a random bearer token
-- and a random body per request (drawn independently, each thread its own
-- random sequence), and a count of the answers by status.
--   wrk -t2 -c50 -d10s --latency -s bench/orders_wrk.lua http://127.0.0.1:18091 -- \
--       METHOD PATH TOKENS_FILE|- BODIES_FILE|-
-- TOKENS_FILE: one JWT a line (sent as "Authorization: Bearer <token>");
-- BODIES_FILE: one JSON body a line (sent with Content-Type:
-- application/json); "-" for none.
-- done() prints one machine-readable "BENCH k=v ..." line: wrk's totals and
-- latency percentiles (over all answers, whatever their status), and the
-- answers by status: s200 s201 s401 s409 s422 s4xx (other 4xx) s5xx sother.

local threads = {}
function setup(thread)
	table.insert(threads, thread)
	thread:set("thread_no", #threads)
end

local method, path = "GET", "/"
local tokens, bodies = {}, {}
local ntok, nbody = 0, 0

local function load(file)
	local t = {}
	if file == nil or file == "" or file == "-" then
		return t
	end
	local f = assert(io.open(file, "r"))
	for line in f:lines() do
		if line ~= "" then
			t[#t + 1] = line
		end
	end
	f:close()
	return t
end

-- per-thread counters (globals: done() reads them with thread:get)
s200, s201, s401, s409, s422, s4xx, s5xx, sother = 0, 0, 0, 0, 0, 0, 0, 0

function init(args)
	method = args[1] or method
	path = args[2] or path
	tokens = load(args[3])
	bodies = load(args[4])
	ntok, nbody = #tokens, #bodies
	math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919)
	for _ = 1, 10 do math.random() end
end

local line1
function request()
	line1 = line1 or (method .. " " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n")
	local h = line1
	if ntok > 0 then
		h = h .. "Authorization: Bearer " .. tokens[math.random(ntok)] .. "\r\n"
	end
	if nbody > 0 then
		local b = bodies[math.random(nbody)]
		return h .. "Content-Type: application/json\r\nContent-Length: " .. #b .. "\r\n\r\n" .. b
	end
	return h .. "\r\n"
end

function response(status, headers, body)
	if status == 201 then
		s201 = s201 + 1
	elseif status == 200 then
		s200 = s200 + 1
	elseif status == 409 then
		s409 = s409 + 1
	elseif status == 422 then
		s422 = s422 + 1
	elseif status == 401 then
		s401 = s401 + 1
	elseif status >= 400 and status < 500 then
		s4xx = s4xx + 1
	elseif status >= 500 then
		s5xx = s5xx + 1
	else
		sother = sother + 1
	end
end

function done(summary, latency, requests)
	local c = { s200 = 0, s201 = 0, s401 = 0, s409 = 0, s422 = 0, s4xx = 0, s5xx = 0, sother = 0 }
	for _, t in ipairs(threads) do
		for k, _ in pairs(c) do
			c[k] = c[k] + (tonumber(t:get(k)) or 0)
		end
	end
	local e = summary.errors
	io.write(string.format(
		"BENCH requests=%d duration_us=%d bytes=%d p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f " ..
		"connect=%d read=%d write=%d timeout=%d status=%d " ..
		"s200=%d s201=%d s401=%d s409=%d s422=%d s4xx=%d s5xx=%d sother=%d\n",
		summary.requests, summary.duration, summary.bytes,
		latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
		e.connect, e.read, e.write, e.timeout, e.status,
		c.s200, c.s201, c.s401, c.s409, c.s422, c.s4xx, c.s5xx, c.sother))
end
