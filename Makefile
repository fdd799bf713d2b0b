# sipxmpp: the two commands are `make run` and `make test`. Both do all set-up
# on a fresh Debian-based machine: apt packages (through sudo when not root),
# a virtualenv in .venv with the pinned versions of constraints.txt, and the
# package itself (installed, not editable, so twistd finds its plugin).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CONFIG ?= etc/sipxmpp.conf.example
TESTS ?= tests

# Real servers and user agents the tests run against.
APT_PACKAGES := prosody ejabberd kamailio kamailio-presence-modules sip-tester baresip linphone-cli postgresql \
	openssl iproute2 procps tshark python3-venv mcabber chromium systemd

.PHONY: deps venv install test lint run demo clean

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: $(BIN)/python setup.py constraints.txt
	$(BIN)/pip install -q -c constraints.txt setuptools wheel
	$(BIN)/pip install -q -c constraints.txt ".[dev]"
	touch $@

venv: $(VENV)/.deps

# Always reinstall the package itself (a few seconds): the plugin that twistd
# loads is the installed copy.
install: venv
	$(BIN)/pip install -q --no-deps --force-reinstall .

test: deps install
	$(BIN)/python -m twisted.trial -j2 $(TESTS) 2>&1 | tee .trial.log; \
	$(BIN)/python tests/summary.py .trial.log

lint: venv
	$(BIN)/ruff check sipxmpp twisted_plugins tests bench fuzz setup.py
	$(BIN)/mypy --strict sipxmpp

run: deps install
	$(BIN)/python -m sipxmpp.testing.devstack --gateway-config $(CONFIG)

demo: deps install
	$(BIN)/python -m sipxmpp.testing.devstack --gateway-config $(CONFIG) --demo

clean:
	rm -rf $(VENV) build dist *.egg-info _trial_temp* .trial.log run
