# Every target sets up its own virtualenv from the pinned lock files on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock requirements-test.lock pyproject.toml setup.py src/batched_event_api/events/_native.c src/batched_event_api/commit/_durable.c | cksum | cut -d' ' -f1)

.PHONY: run test lint python-path bench sanitize browser tracer docker-check several-instances-check clean

run: $(STAMP)
	$(BIN)/batched-event-api serve -o ./data

test: $(STAMP) lint sanitize python-path browser tracer
	$(BIN)/python -m pytest

# Lint and format (ruff), types (mypy, settings in pyproject.toml) and the import contracts:
# imports run down the pipeline's layers, and no cycle anywhere (import-linter).
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# The Python path alone (BEA_NATIVE=0, what runs where no C compiler is): the golden replays and
# the rendering, decoding, window and commit tests, servers included.
python-path: $(STAMP)
	BEA_NATIVE=0 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_golden.py tests/test_vectors.py \
	    tests/test_decode.py tests/test_render.py tests/test_windows.py tests/test_writer.py tests/test_group_commit.py \
	    tests/test_durable.py tests/test_generated.py

# The /docs test renders the page in a headless Chromium (Debian's package): installed when missing.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	    { echo "make test needs Chromium for the /docs test: sudo apt-get install chromium"; exit 1; }

# A test watches the C twin of a round's writes and syncs from the kernel's side, with strace.
tracer:
	@command -v strace >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null; } || \
	    { echo "make test needs strace for tests/test_durable.py: sudo apt-get install strace"; exit 1; }

# W1–W6 (W1/W2 also with a bucket and with --format parquet beside CSV), then what converting a
# window to Parquet costs (throughput, sizes) and the peak memory while a 1 GiB window is converted.
bench: $(STAMP)
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/convert.py --size 256
	$(BIN)/python bench/window_memory.py 1GiB
	$(BIN)/python bench/growth.py

# The compiled parts (the native pass, commit/_durable.c) built with AddressSanitizer and
# UndefinedBehaviorSanitizer (any finding aborts), then their differential, hypothesis and vector
# tests run against that build.
SANITIZED := build/sanitize
PYCONFIG   = $(BIN)/python -c 'import sysconfig, sys; print(sysconfig.get_config_var(sys.argv[1]) or sysconfig.get_paths()[sys.argv[1]])'
sanitize: $(STAMP)
	rm -rf $(SANITIZED) && mkdir -p $(SANITIZED) && cp -r src/batched_event_api $(SANITIZED)/
	rm -f $(SANITIZED)/batched_event_api/*/*.so
	for part in events/_native commit/_durable; do \
	    gcc -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
	        -std=c11 -Wall -Wextra -Wno-unused-parameter -I"$$($(PYCONFIG) include)" \
	        src/batched_event_api/$$part.c -o $(SANITIZED)/batched_event_api/$$part$$($(PYCONFIG) EXT_SUFFIX) || exit 1; \
	done
	PYTHONPATH=$(SANITIZED) ASAN_OPTIONS=detect_leaks=0 \
	    LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	    sh -c '$(BIN)/python -c "import batched_event_api.events._native as n, batched_event_api.commit._durable as d; assert all(\"$(SANITIZED)\" in m.__file__ for m in (n, d))" && \
	           $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_native.py tests/test_decode.py tests/test_render.py tests/test_vectors.py tests/test_windows.py \
	               tests/test_durable.py tests/test_group_commit.py'

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock -r requirements-test.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

# Needs a running Docker engine (not part of make test): see scripts/docker-check.sh.
docker-check:
	bash scripts/docker-check.sh

# Needs a Docker engine with a bridge network (not part of make test): see scripts/several-instances-check.sh.
several-instances-check:
	bash scripts/several-instances-check.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
