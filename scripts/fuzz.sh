#!/usr/bin/env bash
# Builds the libFuzzer target for the file parsers (fuzz/load_parser_fuzz.cc)
# with clang, ASan and UBSan into ${EPLB_FUZZ_BUILD_DIR:-build-fuzz}, and runs
# it for SECONDS (default 60). Exits non-zero when the fuzzer finds anything;
# the input that did it is saved under build-fuzz/artifacts/.
#
#   bash scripts/fuzz.sh [SECONDS]
#
# Seeds: the measured loads (data/loads), a few golden files, and hostile
# cases written here at run time (JSON nested 75,000 and 65 deep, a truncated
# load, NaN, 1e400, ragged rows, a 10 KB string value, phy2log entries beyond
# 32 bits). What the fuzzer adds is kept in build-fuzz/corpus for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
build=${EPLB_FUZZ_BUILD_DIR:-build-fuzz}
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DEPLB_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
fi
cmake --build "$build" -j "${EPLB_JOBS:-$(nproc)}" --target load_parser_fuzz

seeds=$build/seeds
rm -rf "$seeds"
mkdir -p "$seeds" "$build/corpus" "$build/artifacts"
cp data/loads/*.json "$seeds/"
cp data/golden/deepseek/deepseek-readme.json data/golden/deepseek/seed1-1-zipf-L1E8R8g1n1p4.json "$seeds/"
python3 - "$seeds" data/loads/deepseek-v3-prefill_in1024.json <<'PY'
import sys
seeds, load = sys.argv[1], sys.argv[2]
def nested(depth):
    return '{"load": [[1, 2]], "note": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
text = open(load).read()
cases = {
    "deep-75000.json": '{"load": ' + "[" * 75000 + "]" * 75000 + "}",
    "deep-65.json": nested(65),
    "deep-64.json": nested(64),
    "truncated.json": text[: len(text) // 2],
    "nan.json": '{"load": [[1, NaN, 3]]}',
    "inf.json": '{"load": [[1, 1e400, 3]]}',
    "huge.json": '{"load": [[1, 1e39, 3]]}',
    "negative.json": '{"load": [[1, -0.5, 3]]}',
    "ragged.json": '{"load": [[1, 2, 3], [1, 2]]}',
    "string.json": '{"load": [[1, "' + "x" * 10000 + '", 3]]}',
    "unterminated.json": '{"load": [[1, "' + "x" * 10000,
    "golden.json": '{"input": {"load": [[4, 1], [2, 2]], "num_replicas": 4, "num_groups": 1,'
                   ' "num_nodes": 1, "num_gpus": 18446744073709551615}}',
    "placement.json": '{"phy2log": [[0, 1, 2, 3, 0, 1], [3, 2, 1, 0, 2, 3]], "num_ranks": 2}',
    "placement-2e40.json": '{"phy2log": [[0, 1099511627776]], "num_ranks": 2}',
    "placement-replicas.json": '{"phy2log": [[0, 1, 0, 0, 0, 0, 0, 0]], "num_ranks": 4,'
                               ' "num_experts": 2}',
}
for name, body in cases.items():
    with open(f"{seeds}/{name}", "w") as f:
        f.write(body)
PY

# -timeout: an input that takes 10 s is a finding too (the real loads take milliseconds).
"$build/load_parser_fuzz" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$build/artifacts/" "$build/corpus" "$seeds"
