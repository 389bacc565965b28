# Set-up and entry points. `make app` and `make test` work on a fresh Debian machine.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
APT_PKGS := python3 python3-venv dataset-fashion-mnist mate-backgrounds chromium
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup apt venv app test test-fast lint clean

setup: apt venv

# Debian packages: Python with venv (ensurepip), real Fashion-MNIST files, natural photos,
# headless Chromium for e2e tests.
apt:
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

venv: $(VENV)/.installed

# A venv without pip (left by a `python3 -m venv` that failed for want of python3-venv) is made
# again in place: venv then installs pip into it.
$(VENV)/.installed: requirements.txt
	$(PY) -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

app: setup
	$(PY) -m app.ui $(ARGS)

test: setup
	$(PY) -m pytest $(ARGS)

test-fast: venv
	$(PY) -m pytest -m "not slow and not e2e" $(ARGS)

lint: venv
	$(PY) -m ruff check .

clean:
	rm -rf .pytest_cache .ruff_cache test-artifacts
