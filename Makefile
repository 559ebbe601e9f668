# Two commands a newcomer needs:
#   make run    install everything, then start the gateway on embedded defaults
#   make test   install everything, then run the whole test suite
# Both work on a fresh Debian/Ubuntu machine (apt packages are installed when missing).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# What the gateway needs to run, and what only the test suite needs (real peers: Redis, SIP
# user agents, a browser, Kamailio in front of several nodes).
RUN_APT  :=
TEST_APT := redis-server baresip sip-tester chromium sox openssl kamailio haproxy
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup system-packages venv models node-tools bench clean

run: setup
	$(VENV)/bin/voicegw serve

# Two test processes, each taking whole files (a file's module fixtures, loaded models among them,
# start once): most tests wait on real peers, real-time audio and timers rather than the CPU, so two
# at once take about half the time of one on two cores. TEST_JOBS=0 runs them in this process.
TEST_JOBS ?= 2
test: APT_PACKAGES = $(RUN_APT) $(TEST_APT)
test: setup node-tools
	$(PY) -m pytest -q -p no:cacheprovider $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadfile) $(PYTEST_ARGS)

APT_PACKAGES ?= $(RUN_APT)

setup: system-packages venv models

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { echo "installing python3-venv"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

models: venv
	$(PY) -m gateway.voice.model_install

# Test-only Node tools (Stoplight Prism serves Twilio's OpenAPI description for the SMS tests),
# installed into a git-ignored project directory; the gateway itself never runs Node.
NODE_DIR := tests/.node
PRISM := $(NODE_DIR)/node_modules/.bin/prism
PRISM_VERSION := 5.14.2

node-tools: $(PRISM)

$(PRISM):
	@command -v npm >/dev/null 2>&1 || { echo "installing nodejs and npm"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm; }
	npm install --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error @stoplight/prism-cli@$(PRISM_VERSION)

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) data models/whisper-base $(NODE_DIR)
