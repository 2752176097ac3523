# Two commands: `make run` serves the embedded default; `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: run test browser install migrate seed lint format openapi worker bench-search bench-relevance bench-embedders bench-vectors train-fusion bench-attachments bench-soak bench-channels bench-imports bench-analytics bench-learning fuzz clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python -m app migrate

seed: migrate
	$(BIN)/python -m app seed-demo

run: seed
	@echo "Serving on http://$${KB_HOST:-127.0.0.1}:$${KB_PORT:-8000}  (API docs at /docs)"
	$(BIN)/python -m app serve

worker: migrate
	$(BIN)/python -m app worker

# The analytics report's browser test (tests/analytics/test_report_browser.py) drives Debian's chromium
# through Playwright (no browser download); fonts-noto-cjk draws the Chinese labels.
browser:
	command -v chromium >/dev/null && fc-list 2>/dev/null | grep -q 'Noto Sans CJK' || \
	  (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-noto-cjk)

# The suite runs on every core, at most 4 (pytest-xdist): each worker has its own databases and ports.
TEST_WORKERS ?= auto --maxprocesses=4 --dist worksteal

test: install browser
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(TEST_WORKERS) --durations=20

# The fuzz stage alone, long: schemathesis with 200 examples per operation (make test runs 10).
fuzz: install
	KB_FUZZ_MAX_EXAMPLES=200 $(BIN)/pytest -rA tests/core/test_fuzz.py

lint: install
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format app tests bench

openapi: install
	$(BIN)/python -m app export-openapi

bench-search: install
	$(BIN)/python bench/search_embedded.py
	$(BIN)/python bench/search_http.py

bench-relevance: install
	$(BIN)/python bench/relevance.py

# The semantic leg at 100,000 items: vector memory, latency under ACL and filters, embedding throughput.
bench-vectors: install
	$(BIN)/python bench/vectors.py

bench-embedders: install
	$(BIN)/python bench/embedders.py

train-fusion: install
	$(BIN)/python bench/train_fusion.py

bench-attachments: install
	$(BIN)/python bench/blob_upload.py
	$(BIN)/python bench/extraction.py

bench-soak: install
	$(BIN)/python bench/soak.py

# Channel read API under wrk (apt-get install -y wrk): items 200/304, answers, screen pop, publish visibility.
bench-channels: install
	$(BIN)/python bench/channels.py

# Bulk import through POST /api/v1/imports: 100,000 rows, NDJSON and XLSX (`bench/imports.py --rows N`).
bench-imports: install
	$(BIN)/python bench/imports.py

bench-analytics: install
	$(BIN)/python bench/analytics.py

# Training and exams: a 50-question paper from a bank on 100,000 items; 500 agents submitting in one minute over HTTP.
bench-learning: install
	$(BIN)/python bench/learning.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
