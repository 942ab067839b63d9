# SPDX-License-Identifier: Apache-2.0
# Entry points. `make run` and `make test` install what is missing, configure, build, then run.
#   make run     start cpmd with its embedded defaults (data in ./var, gRPC on 127.0.0.1:50051)
#   make test    build with warnings as errors and run every test (ctest), then build and test the
#                libpng/libjpeg image path (CPM_WITH_OPENCV=OFF) as well
#   make build   just build (build/bin/cpmd, build/bin/cpmctl)
BUILD ?= build
BUILD_NO_OPENCV ?= build-no-opencv
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=
RUN_ARGS ?=

# ccache: identical compiles in both build trees and across clones hit the same cache entries.
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1
export CCACHE_MAXSIZE ?= 5G

BUILD_FUZZ ?= build-fuzz
FUZZ_SECONDS ?= 30

.PHONY: deps build run test test-no-opencv fuzz clean

deps:
	deploy/install-deps.sh

$(BUILD)/build.ninja: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -G Ninja -DCPM_WERROR=ON $(CMAKE_ARGS)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# Without --model (or --config) in RUN_ARGS, `make run` serves a tiny demo checkpoint of the real
# format with random weights, written once under var/: every call of the API works, the answers
# are noise. It also renders a small demo dataset (deploy/demo/formulas.txt, latex + dvipng) to
# fine-tune on. RUN_ARGS='--model /path/to/MiniCPM-o-2_6' serves the real model.
DEMO_MODEL ?= var/demo-model
DEMO_DATA ?= var/demo-data
run: build
	@if echo " $(RUN_ARGS) " | grep -qE ' --(model|config)[ =]'; then exec $(BUILD)/bin/cpmd $(RUN_ARGS); fi; \
	if [ ! -f $(DEMO_MODEL)/config.json ]; then \
	  mkdir -p $(dir $(DEMO_MODEL)) && $(BUILD)/bin/cpm-tool mkmodel --out $(DEMO_MODEL) --preset tiny || exit 1; \
	fi; \
	if [ ! -f $(DEMO_DATA)/labels.csv ]; then \
	  $(BUILD)/bin/cpmctl dataset render deploy/demo/formulas.txt --out $(DEMO_DATA) >/dev/null || \
	    echo "make run: could not render the demo dataset (latex + dvipng); cpmctl train needs a dataset of yours"; \
	fi; \
	echo "make run: no --model given, so cpmd serves $(DEMO_MODEL), a tiny checkpoint with RANDOM weights"; \
	echo "          (the API works, the answers are noise); for real answers: make run RUN_ARGS='--model DIR'"; \
	echo "          with DIR a download of openbmb/MiniCPM-o-2_6. Then, in another shell:"; \
	echo "            $(BUILD)/bin/cpmctl health && $(BUILD)/bin/cpmctl info"; \
	echo "            $(BUILD)/bin/cpmctl train $(DEMO_DATA)/labels.csv --name demo --max-steps 30 --lr 1e-3 --eval-size 2 --follow"; \
	echo "            $(BUILD)/bin/cpmctl ocr --adapter demo $(DEMO_DATA)/000001.png"; \
	echo "            $(BUILD)/bin/cpmctl jobs && $(BUILD)/bin/cpmctl adapters && $(BUILD)/bin/cpmctl metrics"; \
	exec $(BUILD)/bin/cpmd --model $(DEMO_MODEL) $(RUN_ARGS)

# The main suite runs last, so that its summary closes the output.
test: build
	$(MAKE) --no-print-directory test-no-opencv
	$(MAKE) --no-print-directory fuzz
	$(MAKE) --no-print-directory check-deploy
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

# The image decoders are the only code that differs without OpenCV: build the core and its unit
# tests against libpng + libjpeg and run them.
test-no-opencv: deps
	cmake -S . -B $(BUILD_NO_OPENCV) -G Ninja -DCPM_WERROR=ON -DCPM_WITH_OPENCV=OFF $(CMAKE_ARGS)
	cmake --build $(BUILD_NO_OPENCV) -j $(JOBS) --target core_common_test core_io_test core_image_test core_model_test core_vision_test \
	  core_train_data_test core_train_metrics_test
	ctest --test-dir $(BUILD_NO_OPENCV) --output-on-failure -j $(JOBS) -L core

# Each libFuzzer harness runs for FUZZ_SECONDS from the committed seed files, with a fixed seed so a
# run can be repeated; a crash, a leak or an allocation past the RSS limit fails.
FUZZERS = safetensors_header_fuzz:tests/data/safetensors image_decode_fuzz:tests/data/images
fuzz: deps
	CXX=clang++ cmake -S . -B $(BUILD_FUZZ) -G Ninja -DCPM_BUILD_FUZZERS=ON -DCPM_BUILD_TESTS=OFF \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)
	cmake --build $(BUILD_FUZZ) -j $(JOBS) --target $(foreach f,$(FUZZERS),$(word 1,$(subst :, ,$(f))))
	@set -e; for spec in $(FUZZERS); do \
	  name=$${spec%%:*}; seeds=$${spec#*:}; log=$(BUILD_FUZZ)/$$name.log; \
	  mkdir -p $(BUILD_FUZZ)/corpus/$$name; \
	  echo "fuzz: $$name for $(FUZZ_SECONDS) s (log: $$log)"; \
	  if ASAN_OPTIONS=quarantine_size_mb=256 $(BUILD_FUZZ)/fuzz/$$name -max_total_time=$(FUZZ_SECONDS) -seed=1 -max_len=65536 -rss_limit_mb=4096 \
	       -print_final_stats=1 $(BUILD_FUZZ)/corpus/$$name $$seeds > $$log 2>&1; then \
	    grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' $$log; \
	  else tail -n 60 $$log; exit 1; fi; \
	done

# The deployment artifacts (docker/, deploy/, see deploy/README.md): manifests, the Dockerfile
# against the project's own scripts, promtool, and the dashboard and alert rules against a real
# cpmd scraped by a real Prometheus.
.PHONY: check-deploy
check-deploy: build
	/usr/bin/python3 tests/deploy/check_deploy.py --build $(BUILD)

clean:
	rm -rf $(BUILD) $(BUILD_NO_OPENCV) $(BUILD_FUZZ)
