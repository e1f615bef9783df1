VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint server demo demo-stop bench soak venv clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[server,test,lint]'
	touch $(STAMP)

venv: $(STAMP)

# pytest-xdist: 4 workers (the tests mostly wait on servers, daemons and timers, so more workers
# than the 2 cores pay off), one test handed out at a time so tests/conftest.py's longest-first
# order holds. Override with e.g. `make test XDIST="-n 0"` (or run pytest directly: no xdist).
XDIST ?= -n 4 --maxschedchunk 1

test: $(STAMP)
	$(PY) -m pytest -q $(XDIST)

lint: $(STAMP)
	$(VENV)/bin/ruff check ppz tests
	$(VENV)/bin/mypy ppz

server: $(STAMP)
	@mkdir -p .demo/server
	@KEY=$$(PPZ_SERVER_DATA=.demo/server $(VENV)/bin/ppz-server add-key --account=demo) && \
	  echo "api key for account demo: $$KEY" && \
	  echo "log in with:  ppz login http://127.0.0.1:8080 --apikey $$KEY"
	PPZ_SERVER_DATA=.demo/server PPZ_NATS_SERVER_BIN=$$($(PY) -c 'import ppz.server.natsbin as n; print(n.nats_server_bin())') \
	  $(VENV)/bin/ppz-server serve

bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

# Not part of `make test`: runs the exactly-once soak (docs/reliability.md), ~1 min per run.
soak: $(STAMP)
	$(PY) scripts/soak.py $(SOAK_ARGS)

demo: $(STAMP)
	@scripts/demo.sh

demo-stop:
	@scripts/demo-stop.sh

clean:
	-@scripts/demo-stop.sh >/dev/null 2>&1
	rm -rf $(VENV) .demo
