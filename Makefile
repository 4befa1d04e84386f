# comfyfn — the two commands a fresh machine needs:
#   make demo   set everything up, start the local engine, generate a few images
#   make test   set everything up and run the whole test suite (what CI runs)
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= out/demo
# what the engine's first install takes (comfyfn.engine.install.INSTALL_SIZE, INSTALL_TIME)
ENGINE_SIZE := 1.6 GB
ENGINE_TIME := 1–2 minutes
# mypy over the packages tests/ and bench/ (pyproject.toml's overrides: not strict, untyped
# test bodies checked), each module named as pytest and `python -m` import it (tests.unit.x,
# tests.support.pg, bench.scale); `mypy` alone checks src strictly
MYPY_TESTS := $(BIN)/mypy tests bench

.PHONY: demo test test-main test-033 test-028 unit lint typecheck bench engine-down clean

$(BIN)/.installed: pyproject.toml
	@echo "make: setting up $(VENV): comfyfn and its development tools from PyPI (about 2 minutes the first time)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	@echo "make: the local engine (the first time: CPU torch, ComfyUI and tiny weights into ~/.cache/comfyfn, $(ENGINE_SIZE), $(ENGINE_TIME))"
	$(BIN)/comfyfn engine install
	@echo "make: generating 4 images on the CPU engine into $(OUT)/"
	$(BIN)/comfyfn generate "一位身着旗袍的女性漫步在上海外滩夜景" --seed 42 --size 256x256 -o $(OUT)
	$(BIN)/comfyfn generate "A neon sign that says \"comfyfn\", rainy night street" --seed 7 --size 256x160 -o $(OUT)
	$(BIN)/comfyfn generate "水墨山水画，远山云雾" --size 160x256 --batch 2 -o $(OUT)
	@echo "images are in $(OUT)/ (the local engine keeps running: make engine-down)"

COMFYUI_033 ?= ../shared/comfyui/0.33.0/ComfyUI-0.33.0.tar.gz
COMFYUI_028 ?= ../shared/comfyui/0.28.0/ComfyUI-0.28.0.tar.gz
LOGS ?= out/test-logs

# Two tiers at once (CI stays under 20 minutes on two cores): the whole suite on the managed
# ComfyUI 0.3.75, and the integration tests that talk to ComfyUI again on 0.33.0. Each tier's
# output goes to $(LOGS)/ and is printed whole when it ends; make fails if either does. Each
# tier's JUnit XML ($(LOGS)/*.xml) keeps every test's duration, for balancing the tiers.
test: $(BIN)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(MYPY_TESTS)
	sh tests/pg_install.sh
	sh tests/chromium_install.sh
	@echo "make: the local engine (the first time: $(ENGINE_SIZE), $(ENGINE_TIME))"
	$(BIN)/comfyfn engine install
	@mkdir -p $(LOGS)
	@$(MAKE) --no-print-directory -j2 test-main test-033

# the unit tests, the README's blocks and the integration tests that talk to ComfyUI, on the
# managed ComfyUI 0.3.75 (and those marked one_version, which run on it only; those marked
# any_version, not about the ComfyUI version, run in the other tier only, to balance the two)
test-main: $(BIN)/.installed
	@sh tests/tier.sh $(LOGS)/main.log $(BIN)/python -m pytest -m "(not no_engine or one_version) and not any_version" --durations=15 --junitxml=$(LOGS)/main.xml

# the integration tests that talk to ComfyUI, again on 0.33.0 from ../shared (tests marked
# one_version ran on the managed engine already), and those that do not talk to ComfyUI
# (workers on simulated servers, PostgreSQL, S3, the browser) or are not about its version
# (any_version: MCP, the web app, the gateway's API, storage, events and replicas), once;
# the fault files about our own handling are one_version: the two tiers take about as long
# (each test whose subject is ComfyUI's behaviour still runs on both). Without the
# 0.33.0 tree, these run on the managed engine, saying so.
test-033: $(BIN)/.installed
	@if [ -f "$(COMFYUI_033)" ]; then \
	  COMFYFN_TEST_COMFYUI="$(abspath $(COMFYUI_033))" COMFYFN_TEST_ENGINE=pytest-033 \
	    sh tests/tier.sh $(LOGS)/033.log $(BIN)/python -m pytest tests/integration -m "engine or no_engine" -p no:cacheprovider --durations=15 --junitxml=$(LOGS)/033.xml; \
	else echo "test-033: $(COMFYUI_033) is absent: the tests that do not talk to ComfyUI run here"; \
	  COMFYFN_TEST_ENGINE=pytest-033 sh tests/tier.sh $(LOGS)/033.log $(BIN)/python -m pytest tests/integration -m "(no_engine and not one_version) or any_version" -p no:cacheprovider --durations=15 --junitxml=$(LOGS)/033.xml; fi

# the same on ComfyUI 0.28.0 (not part of make test any more; its tree stays for the unit fixtures)
test-028: $(BIN)/.installed
	@if [ -f "$(COMFYUI_028)" ]; then \
	  COMFYFN_TEST_COMFYUI="$(abspath $(COMFYUI_028))" COMFYFN_TEST_ENGINE=pytest-028 \
	    $(BIN)/python -m pytest tests/integration -m engine -p no:cacheprovider; \
	else echo "test-028 skipped: $(COMFYUI_028) is absent"; fi

unit: $(BIN)/.installed
	$(BIN)/python -m pytest tests/unit

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(BIN)/.installed
	$(BIN)/mypy
	$(MYPY_TESTS)

bench: $(BIN)/.installed
	$(BIN)/python -m bench.client_overhead
	$(BIN)/python -m bench.batch_throughput --rss-rows 100000
	$(BIN)/python -m bench.gateway_latency

engine-down: $(BIN)/.installed
	$(BIN)/comfyfn engine down

clean:
	rm -rf $(VENV) out .pytest_cache
