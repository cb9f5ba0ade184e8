-- wrk script: the product list, cycling through a file of request paths
-- (one per line; bench/run.sh generates it: a weighted random mix of
-- city / category / sort filters and second pages reached by a cursor).
--   wrk -t2 -c100 -d10s --latency -s bench/product_list.lua http://127.0.0.1:18081 -- PATHS_FILE
-- Without PATHS_FILE a small built-in mix is used. Requests are built once
-- in init(); each thread starts at a different place in the list.
-- done() prints one machine-readable "BENCH k=v ..." line for bench/run.sh.

local threads = 0
function setup(thread)
	threads = threads + 1
	thread:set("thread_no", threads)
end

local reqs = {}
local n, i = 0, 0

function init(args)
	local paths = {}
	local f = args[1] and io.open(args[1], "r")
	if f then
		for line in f:lines() do
			if line ~= "" then paths[#paths + 1] = line end
		end
		f:close()
	end
	if #paths == 0 then
		for c = 1, 10 do
			paths[#paths + 1] = "/api/v1/products?city_id=" .. c .. "&sort=newest"
			paths[#paths + 1] = "/api/v1/products?category_id=" .. c .. "&sort=newest"
			paths[#paths + 1] = "/api/v1/products?city_id=" .. c .. "&sort=price_asc"
		end
	end
	for k, p in ipairs(paths) do
		reqs[k] = "GET " .. p .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
	end
	n = #reqs
	i = math.floor(((thread_no or 1) - 1) * n / 2) % n
end

function request()
	i = i % n + 1
	return reqs[i]
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
