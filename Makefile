# The two commands of the README: `make run` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SYSTEM_PACKAGES := qemu-user-static debootstrap g++-aarch64-linux-gnu qemu-user libglib2.0-dev pkg-config dpkg-dev llvm-19

.PHONY: run test test-fast venv system-packages device clean

run: $(VENV)/.installed
	$(PY) compile.py --target rpi4

# Two pytest-xdist workers, a test module at a time on one worker (its module fixtures are built once).
test: $(VENV)/.installed system-packages device
	$(PY) -m pytest -n 2 --dist loadscope

test-fast: $(VENV)/.installed
	$(PY) -m pytest -n 2 -m "not emulated and not slow"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

# Debian packages the tests need: qemu-user-static + debootstrap (emulated Pi), the GNU cross linker (and its
# binutils), qemu-user + glib headers + dpkg-dev (the instruction counter's plugins, built from qemu's source),
# llvm-19 (llvm-mc and llvm-mca: the cycle estimate).
# --no-install-recommends: qemu-user recommends qemu-user-binfmt, which conflicts with qemu-user-static.
system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The emulated Raspberry Pi 4 (arm64 Debian + aarch64 TVM runtime), built once into ~/.cache.
device: $(VENV)/.installed system-packages
	$(PY) -m compiler emulator setup

clean:
	rm -rf build dist .pytest_cache
