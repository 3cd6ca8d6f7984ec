# Two commands on a fresh machine:
#   make demo   - set up everything and run the pipeline (ser-stream up) on the bundled sample
#   make test   - set up everything (training extras included) and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SAMPLE := ser_stream/samples/sample_speech.flac

.PHONY: demo test setup setup-dev system-packages system-packages-dev lint clean

demo: setup
	$(BIN)/ser-stream up --source file:$(SAMPLE)
	@echo
	@echo "ser-stream is installed in $(VENV). Run it as $(BIN)/ser-stream, or put it on the PATH"
	@echo "of this shell with: . $(BIN)/activate   (then: ser-stream --help)"

test: setup-dev
	$(BIN)/python -m pytest -q

lint: setup-dev
	$(BIN)/ruff check ser_stream stages models train tests benchmarks examples
	$(BIN)/ruff format --check ser_stream stages models train tests benchmarks examples

# System packages, installed with apt-get when something is missing.
# Runtime (demo): venv support, PortAudio for microphone capture (sounddevice) and ALSA's
# pulse plugin, through which PortAudio reaches a PulseAudio or PipeWire desktop.
# Tests add: espeak-ng (tests that speak real sentences), libzmq headers and a C compiler
# (the C sink example), and a PulseAudio server with its tools (the microphone tests play
# audio into a virtual microphone through a real audio server), and Chromium with its
# WebDriver (the live page of `ser-stream serve`, tested in a headless browser), and ffmpeg
# (the real codecs of the channel-shift yardstick).
RUNTIME_DEBS := libportaudio2 libasound2-plugins python3-venv
TEST_DEBS    := espeak-ng libzmq3-dev gcc make pulseaudio pulseaudio-utils chromium chromium-driver ffmpeg
APT_INSTALL  := if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq

system-packages:
	@if ! /sbin/ldconfig -p | grep -q libportaudio.so.2 \
		|| ! ls /usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so >/dev/null 2>&1 \
		|| ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
		$(APT_INSTALL) $(RUNTIME_DEBS); \
	fi

system-packages-dev: system-packages
	@if ! command -v espeak-ng >/dev/null || ! [ -f /usr/include/zmq.h ] \
		|| ! command -v cc >/dev/null || ! command -v pulseaudio >/dev/null \
		|| ! command -v paplay >/dev/null || ! command -v chromium >/dev/null \
		|| ! command -v chromedriver >/dev/null || ! command -v ffmpeg >/dev/null; then \
		$(APT_INSTALL) $(TEST_DEBS); \
	fi

# Every install is pinned by constraints.txt, so a fresh clone gets the versions the tests
# last passed with.
PIP_INSTALL := $(BIN)/python -m pip install -q -c constraints.txt

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q pip==26.3

# The demo installs a plain copy (what a user gets); the tests an editable one.
$(VENV)/.runtime: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) .
	touch $@

$(VENV)/.dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[train,test]'
	touch $@ $(VENV)/.runtime

setup: system-packages $(VENV)/.runtime
setup-dev: system-packages-dev $(VENV)/.dev

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
