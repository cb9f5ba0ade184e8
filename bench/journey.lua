-- wrk script: the "10K-user journey" (issue 4) against a marketd that has the
-- Redis cache. Every connection is a user who browses; each request is drawn
-- independently (no think time: a closed loop, so 10,000 connections are a
-- far heavier load than 10,000 people):
--   45 % product list    90 % a first page (shape by weight below; city and
--                        category uniform), 10 % the second page of one
--                        (its cursor, harvested from a real first page)
--   35 % product detail  hot_pct % one of a fixed hot set of hot_n products
--                        (uniform within it), the rest uniform over the
--                        whole catalogue (the long tail)
--   10 % reference data  cities 30 %, categories 30 %, districts of a city 40 %
--    5 % seller detail   uniform over all sellers
--    5 % popular sellers half all cities, half one city
-- No writes (orders, catalogue changes): the journey measures reads only.
--
-- Every request carries "X-Request-Id: jrn-<kind>" (marketd echoes a valid
-- one); response() counts X-Cache (HIT/MISS/BYPASS) and non-2xx per kind and
-- done() prints them, so hit ratios come per kind, not only in total.
--
--   wrk -t2 -c10000 -d30s --latency -s bench/journey.lua URL -- run  CONF
--   wrk -t2 -c100   -d120s          -s bench/journey.lua URL -- warm CONF
-- CONF: key=value lines (bench/run.sh writes it): prod_min prod_max hot_n
-- hot_pct city_min city_max cat_min cat_max seller_min seller_max threads
-- cursors (file of "page-1 path<TAB>cursor" lines) marker (file prefix).
--
-- warm: every thread walks its share of the whole cacheable key space the
-- run mode can draw (every first-page list, the hot products, all sellers,
-- all reference lists, all popular lists) twice — marketd's first request
-- for a product or seller only creates its invalidation tag (BYPASS), the
-- second fills the entry (MISS). Pass one also harvests next_cursor of each
-- first page into <cursors>.<thread>. When a thread has all its answers it
-- writes <marker>.<thread> and stops; bench/run.sh then ends wrk (SIGINT).

local threads = 0
local thread_objs = {}
function setup(thread)
	threads = threads + 1
	thread:set("thread_no", threads)
	thread_objs[threads] = thread
end

-- ---- configuration -----------------------------------------------------------
local cfg = {
	prod_min = 1, prod_max = 1000000, hot_n = 10000, hot_pct = 90,
	city_min = 1, city_max = 20, cat_min = 1, cat_max = 48,
	seller_min = 1, seller_max = 10000, threads = 2,
}
local mode = "run"

local function read_conf(path)
	local f = path and io.open(path, "r")
	if not f then return end
	for line in f:lines() do
		local k, v = line:match("^([%w_]+)=(.*)$")
		if k then cfg[k] = tonumber(v) or v end
	end
	f:close()
end

-- The hot set: hot(k), k = 0..hot_n-1, spread over the catalogue by a prime
-- stride (distinct ids when the id range is not a multiple of 104729).
-- bench/product_detail.lua uses the same formula for its "hot" mode.
local function hot(k)
	local n = cfg.prod_max - cfg.prod_min + 1
	return cfg.prod_min + (k * 104729 + 4242) % n
end

-- First-page list shapes: weight, then a builder from (city, category).
local SHAPES = {
	{30, "city", function(c, k) return "city_id=" .. c .. "&sort=newest" end},
	{15, "city", function(c, k) return "city_id=" .. c .. "&sort=price_asc" end},
	{5, "city", function(c, k) return "city_id=" .. c .. "&sort=price_desc" end},
	{20, "cat", function(c, k) return "category_id=" .. k .. "&sort=newest" end},
	{20, "city_cat", function(c, k) return "city_id=" .. c .. "&category_id=" .. k .. "&sort=newest" end},
	{10, "none", function(c, k) return "sort=newest" end},
}
local SHAPE_TOTAL = 0
for _, s in ipairs(SHAPES) do SHAPE_TOTAL = SHAPE_TOTAL + s[1] end

local KINDS = {"L1", "L2", "DH", "DT", "RF", "SD", "PS"}
local RESULTS = {"HIT", "MISS", "BYPASS", "NONE"}

-- ---- per-thread state ----------------------------------------------------------
local reqs = {}          -- warm mode: the walk (request strings)
local walk_kind = {}     -- warm mode: kind of each walk entry
local walk_path = {}     -- warm mode: path of each entry (first pages only)
local nwalk, iwalk, answered = 0, 0, 0
local cursors = {}       -- run mode: page-1 path -> cursor
local cursor_out = nil   -- warm mode: harvested cursors
local finished = false

local function build(path, id)
	return "GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: " .. id .. "\r\n\r\n"
end

local function list_path(shape, c, k)
	return "/api/v1/products?" .. shape[3](c, k)
end

local function random_list_path()
	local r = math.random() * SHAPE_TOTAL
	local s
	for _, sh in ipairs(SHAPES) do
		s = sh
		if r < sh[1] then break end
		r = r - sh[1]
	end
	return list_path(s, math.random(cfg.city_min, cfg.city_max), math.random(cfg.cat_min, cfg.cat_max))
end

local function add_walk(kind, path)
	nwalk = nwalk + 1
	walk_kind[nwalk] = kind
	if kind == "L1" then walk_path[nwalk] = path end
	reqs[nwalk] = build(path, "W" .. nwalk)
end

local function make_walk(me, nthreads)
	local keys = {}
	local function key(kind, path) keys[#keys + 1] = {kind, path} end
	local seen = {}
	for _, s in ipairs(SHAPES) do
		for c = cfg.city_min, (s[2] == "city" or s[2] == "city_cat") and cfg.city_max or cfg.city_min do
			for k = cfg.cat_min, (s[2] == "cat" or s[2] == "city_cat") and cfg.cat_max or cfg.cat_min do
				local p = list_path(s, c, k)
				if not seen[p] then seen[p] = true; key("L1", p) end
			end
		end
	end
	for k = 0, cfg.hot_n - 1 do key("DH", "/api/v1/products/" .. hot(k)) end
	for s = cfg.seller_min, cfg.seller_max do key("SD", "/api/v1/sellers/" .. s) end
	key("RF", "/api/v1/cities")
	key("RF", "/api/v1/categories")
	key("PS", "/api/v1/sellers/popular")
	for c = cfg.city_min, cfg.city_max do
		key("RF", "/api/v1/cities/" .. c .. "/districts")
		key("PS", "/api/v1/sellers/popular?city_id=" .. c)
	end
	-- this thread's share, walked twice
	for pass = 1, 2 do
		for i = me, #keys, nthreads do
			add_walk(pass == 1 and keys[i][1] or "P2", keys[i][2])
		end
	end
end

function init(args)
	mode = args[1] or "run"
	read_conf(args[2])
	local me = thread_no or 1
	math.randomseed(os.time() * 1000 + me * 7919)
	for _ = 1, 10 do math.random() end
	for _, k in ipairs(KINDS) do
		for _, r in ipairs(RESULTS) do _G["n_" .. k .. "_" .. r] = 0 end
		_G["n_" .. k .. "_non2xx"] = 0
	end
	_G["n_P2_HIT"], _G["n_P2_MISS"], _G["n_P2_BYPASS"], _G["n_P2_NONE"], _G["n_P2_non2xx"] = 0, 0, 0, 0, 0
	if mode == "warm" then
		make_walk(me, cfg.threads)
		if cfg.cursors then cursor_out = io.open(cfg.cursors .. "." .. me, "w") end
	else
		local f = cfg.cursors and io.open(cfg.cursors, "r")
		if f then
			for line in f:lines() do
				local p, c = line:match("^([^\t]+)\t(.+)$")
				if p then cursors[p] = c end
			end
			f:close()
		end
		-- the fixed parts of every request, built once
		for _, k in ipairs(KINDS) do reqs[k] = "\r\nHost: 127.0.0.1\r\nX-Request-Id: jrn-" .. k .. "\r\n\r\n" end
	end
end

local function get(path, kind)
	return "GET " .. path .. " HTTP/1.1" .. reqs[kind]
end

local filler = build("/healthz", "F")
local first = true

function request()
	if mode == "warm" then
		-- wrk calls request() once before the run to inspect it (thread 1):
		-- that answer is never sent, so every thread's first is a filler.
		if first then
			first = false
			return filler
		end
		if iwalk < nwalk then
			iwalk = iwalk + 1
			return reqs[iwalk]
		end
		return filler
	end
	local r = math.random(100)
	if r <= 45 then
		if math.random(100) <= 10 then
			for _ = 1, 10 do
				local p = random_list_path()
				local c = cursors[p]
				if c then return get(p .. "&cursor=" .. c, "L2") end
			end
		end
		return get(random_list_path(), "L1")
	elseif r <= 80 then
		if math.random(100) <= cfg.hot_pct then
			return get("/api/v1/products/" .. hot(math.random(0, cfg.hot_n - 1)), "DH")
		end
		return get("/api/v1/products/" .. math.random(cfg.prod_min, cfg.prod_max), "DT")
	elseif r <= 90 then
		local x = math.random(10)
		if x <= 3 then return get("/api/v1/cities", "RF") end
		if x <= 6 then return get("/api/v1/categories", "RF") end
		return get("/api/v1/cities/" .. math.random(cfg.city_min, cfg.city_max) .. "/districts", "RF")
	elseif r <= 95 then
		return get("/api/v1/sellers/" .. math.random(cfg.seller_min, cfg.seller_max), "SD")
	end
	if math.random(2) == 1 then return get("/api/v1/sellers/popular", "PS") end
	return get("/api/v1/sellers/popular?city_id=" .. math.random(cfg.city_min, cfg.city_max), "PS")
end

function response(status, headers, body)
	local id = headers["x-request-id"] or headers["X-Request-Id"] or ""
	local kind
	if mode == "warm" then
		if id == "F" then return end
		local i = tonumber(id:sub(2))
		if not i then return end
		kind = walk_kind[i]
		answered = answered + 1
		if kind == "L1" and cursor_out and status == 200 then
			local c = body:match('"next_cursor":"([^"]+)"')
			if c then cursor_out:write(walk_path[i], "\t", c, "\n") end
		end
	else
		kind = id:sub(5)
	end
	local xc = headers["x-cache"] or headers["X-Cache"] or "NONE"
	local name = "n_" .. kind .. "_" .. xc
	if _G[name] then _G[name] = _G[name] + 1 end
	if status < 200 or status > 299 then
		name = "n_" .. kind .. "_non2xx"
		if _G[name] then _G[name] = _G[name] + 1 end
	end
	if mode == "warm" and not finished and answered >= nwalk then
		finished = true
		if cursor_out then cursor_out:close(); cursor_out = nil end
		local m = cfg.marker and io.open(cfg.marker .. "." .. (thread_no or 1), "w")
		if m then m:write(answered, "\n"); m:close() end
		wrk.thread:stop()
	end
end

function done(summary, latency, requests)
	local e = summary.errors
	io.write(string.format(
		"BENCH requests=%d duration_us=%d bytes=%d p50_us=%.0f p95_us=%.0f p99_us=%.0f max_us=%.0f " ..
		"connect=%d read=%d write=%d timeout=%d status=%d\n",
		summary.requests, summary.duration, summary.bytes,
		latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
		e.connect, e.read, e.write, e.timeout, e.status))
	-- per kind: "KIND hit miss bypass none non2xx", summed over the threads
	local kinds = {}
	for _, k in ipairs(KINDS) do kinds[#kinds + 1] = k end
	kinds[#kinds + 1] = "P2"
	for _, k in ipairs(kinds) do
		local v = {0, 0, 0, 0, 0}
		for _, t in ipairs(thread_objs) do
			for j, r in ipairs({"HIT", "MISS", "BYPASS", "NONE", "non2xx"}) do
				v[j] = v[j] + (tonumber(t:get("n_" .. k .. "_" .. r)) or 0)
			end
		end
		io.write(string.format("KIND %s hit=%d miss=%d bypass=%d none=%d non2xx=%d\n", k, v[1], v[2], v[3], v[4], v[5]))
	end
end
