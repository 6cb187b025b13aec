# Two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev
STAMP := $(VENV)/.installed-$(EXTRAS)
# Installs come from the lock (uv.lock: every package pinned, for every platform), through
# the hashed requirement files exported from it (requirements/dev.txt: runtime, dev and plot;
# requirements/plot.txt: runtime and plot, for the image; requirements/build.txt: the build
# backend), so an upstream release cannot change what `make install` gives, and pip alone
# installs them. pyproject.toml keeps compatible ranges for users.
REQUIREMENTS := requirements/$(EXTRAS).txt

.PHONY: install run test lock-check lint typecheck pytest inspector bench bench-scale clean vendor-js vectors system-deps lock chaos wheel-check mutations

$(STAMP): $(REQUIREMENTS) requirements/build.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(REQUIREMENTS) -r requirements/build.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(STAMP)

# Refresh the lock from pyproject.toml's ranges and export it (uv, itself pinned in the lock).
UV_EXPORT = $(BIN)/uv export --frozen --format requirements-txt --no-emit-project --no-header --quiet
lock: install
	$(BIN)/uv lock --upgrade --python 3.11
	$(UV_EXPORT) --all-extras -o requirements/dev.txt
	$(UV_EXPORT) --extra plot -o requirements/plot.txt
	$(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes --no-header \
	  requirements/build.in -o requirements/build.txt

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy cannot follow setuptools' package-dir mapping: it checks a copy laid out as the
# package installs (src/statecast/ with protocol/, server/ and loadtest/ inside), and its
# messages name the files of the tree.
TYPECHECK := build/typecheck
typecheck: install
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)
	cp -Rp src/statecast $(TYPECHECK)/statecast
	cp -Rp protocol server loadtest $(TYPECHECK)/statecast/
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml \
	  --cache-dir $(CURDIR)/.mypy_cache -p statecast 2>&1 \
	  | sed -e 's,^statecast/\(protocol\|server\|loadtest\)/,\1/,' -e 's,^statecast/,src/statecast/,'; \
	  exit $${PIPESTATUS[0]}

# The browser tests need Chromium, the JS tests Node and the MCP Inspector's npm: found on PATH, else installed from
# Debian when running as root (CI), else the tests fail saying how to install them.
system-deps:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || true
	@command -v node >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs >/dev/null; } || true
	@command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && apt-get install -y -qq --no-install-recommends npm >/dev/null; } || true

# The MCP Inspector (npm), whose CLI mode tests/mcp/test_inspector.py runs: pinned by
# tests/mcp/inspector/package-lock.json and installed from it, again when the lock changes.
INSPECTOR := tests/mcp/inspector
$(INSPECTOR)/node_modules/.installed: $(INSPECTOR)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: the MCP Inspector test needs Node.js and npm (apt-get install nodejs npm)" >&2; exit 1; }
	cd $(INSPECTOR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

inspector: $(INSPECTOR)/node_modules/.installed

pytest: install system-deps inspector
	$(BIN)/pytest

test: lock-check lint typecheck pytest wheel-check

# The lock matches pyproject.toml's ranges, and the requirement files installs use are the
# lock's own export: a dependency changed in one place and not the others fails here.
lock-check: install
	$(BIN)/uv lock --check --offline --python 3.11
	diff <($(UV_EXPORT) --all-extras) requirements/dev.txt
	diff <($(UV_EXPORT) --extra plot) requirements/plot.txt

# What a user installs is what is tested: the wheel built from this tree, in a clean venv
# with the locked dependencies, run from outside the tree (tests/wheel_check.py).
WHEEL_DIR := build/wheel-check
wheel-check: install
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w $(WHEEL_DIR) .
	$(PYTHON) -m venv $(WHEEL_DIR)/venv
	$(WHEEL_DIR)/venv/bin/python -m pip install --quiet --require-hashes -r requirements/plot.txt -r requirements/build.txt
	$(WHEEL_DIR)/venv/bin/python -m pip install --quiet --no-deps $(WHEEL_DIR)/statecast-*.whl
	cp tests/wheel_check.py $(WHEEL_DIR)/
	cd $(WHEEL_DIR) && venv/bin/python -P wheel_check.py

# Each promise's test fails with the mechanism behind it removed (tests/mutations.py).
mutations: install
	$(BIN)/python -m tests.mutations

# The randomized fault test over a real cluster (tests/chaos/): SEEDS schedules of STEPS
# faults each (CI runs 2 of 5 within `make test`); CHAOS_SEED=S replays one schedule.
SEEDS ?= 20
STEPS ?= 8
chaos: install
	CHAOS_SEEDS=$(SEEDS) CHAOS_STEPS=$(STEPS) $(BIN)/pytest tests/chaos -p no:cacheprovider -q

# The reference comparison: poll vs push vs floor at S = 0 and 12, P = 5 (about 2.5 minutes).
bench: install
	$(BIN)/statecast bench --modes poll,push,floor --agents 8 --rate 5 --spectators 0,12 --poll-hz 5 --duration 15 --warmup 3 --json bench-results.json --report bench-report

# The collapse curve (docs/bench-collapse.png): poll vs push vs the raw floor from 0 to 3,000
# spectators, one room of 8 agents x 5 actions/s (under 4 minutes; report and plots in
# bench-scale-report/). docs/benchmarks.md has the figures at 10,000 from a longer run.
bench-scale: install
	$(BIN)/statecast bench --modes poll,push,raw --agents 8 --rate 5 --spectators 0,10,100,1000,3000 --poll-hz 5 --duration 8 --warmup 2 --no-live --json bench-scale.json --report bench-scale-report

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build $(INSPECTOR)/node_modules

# The browser copy of @msgpack/msgpack (its ESM build and licence) that the server ships in
# server/web/vendor/msgpack/; refresh it from the npm registry (needs npm, only here).
MSGPACK_JS ?= 3.1.3
VENDOR_JS := server/web/vendor/msgpack
vendor-js:
	rm -rf $(VENDOR_JS) && mkdir -p $(VENDOR_JS)
	tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent @msgpack/msgpack@$(MSGPACK_JS) >/dev/null \
	  && tar xzf msgpack-msgpack-$(MSGPACK_JS).tgz \
	  && cd package/dist.esm && find . -name '*.mjs' -exec install -D -m 644 {} $(CURDIR)/$(VENDOR_JS)/{} \; \
	  && install -m 644 ../LICENSE $(CURDIR)/$(VENDOR_JS)/LICENSE && rm -rf $$tmp
	# State keys are any strings (docs/protocol.md §2.2): a "__proto__" key becomes an own
	# property (as JSON.parse makes it), never the prototype, instead of a DecodeError.
	sed -i -e '/if (object === "__proto__") {/,+2d' \
	  -e 's/^\( *\)state\.map\[state\.key\] = object;/\1if (state.key === "__proto__") Object.defineProperty(state.map, state.key, { value: object, writable: true, enumerable: true, configurable: true }); else state.map[state.key] = object;/' \
	  $(VENDOR_JS)/Decoder.mjs
	grep -q 'Object.defineProperty(state.map' $(VENDOR_JS)/Decoder.mjs
	echo "@msgpack/msgpack $(MSGPACK_JS) (dist.esm), from the npm registry by 'make vendor-js'; Decoder.mjs keeps a \"__proto__\" map key as an own property (the Makefile's sed)" > $(VENDOR_JS)/VERSION

# The op and sync vectors the JS client's Node tests check, generated from protocol/.
vectors: install
	$(BIN)/python -m tests.js.vectors > tests/js/vectors.json

