#!/usr/bin/env bash
# Creates the peers' virtual environments (idempotent; a venv whose packages already import at the
# pinned versions is left alone) and bootstraps Caikit's saved model.
#
#   bash bench/peers/setup.sh            # both
#   bash bench/peers/setup.sh kserve     # or just one: kserve | caikit | genai | llamacpp
#
# genai and llamacpp are bench/generation.py --peers' engines (ONNX Runtime GenAI and llama.cpp's
# server); llamacpp builds llama.cpp from source (about 30 min on 2 busy cores, niced, one job).
# Env overrides: PYTHON (default python3.11), KSERVE_VENV, CAIKIT_VENV, GENAI_VENV, LLAMACPP_VENV.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
KSERVE_VENV="${KSERVE_VENV:-$ROOT/bench/.venv-kserve}"
CAIKIT_VENV="${CAIKIT_VENV:-$ROOT/bench/.venv-caikit}"
GENAI_VENV="${GENAI_VENV:-$ROOT/bench/.venv-genai}"
LLAMACPP_VENV="${LLAMACPP_VENV:-$ROOT/bench/.venv-llamacpp}"
export HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WHICH="${1:-all}"

say() { printf '[peers/setup] %s\n' "$*"; }
# pip without the noise of this machine's partial local index (pip's exit status is kept).
pipq() { "$@" 2>&1 | { grep -v "is neither a file nor a directory" || true; }; }

make_venv() {  # $1 = path
  if [ ! -x "$1/bin/python" ]; then
    say "creating $1"
    "$PYTHON" -m venv "$1"
  fi
}

# Runs "$@" holding an exclusive lock on the venv, so two setups never pip into one venv at once.
with_lock() {  # $1 = venv, rest = command
  local venv="$1"; shift
  exec 9>"$venv/.setup.lock"
  if ! flock -n 9; then
    say "another setup holds $venv/.setup.lock; waiting"
    flock 9
  fi
  "$@"
  flock -u 9
}

# -- KServe: kserve 0.21.0 + onnxruntime 1.32.0 + tokenizers + numpy ---------------------------------
kserve_ok() {
  "$KSERVE_VENV/bin/python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
import kserve, onnxruntime, tokenizers, numpy  # noqa: F401
assert version("kserve") == "0.21.0" and version("onnxruntime") == "1.32.0"
EOF
}

install_kserve() {
  if kserve_ok; then say "kserve venv already complete"; return; fi
  local t0=$SECONDS
  pipq "$KSERVE_VENV/bin/pip" install -q "kserve==0.21.0" "onnxruntime==1.32.0" tokenizers numpy
  kserve_ok
  say "kserve venv installed in $((SECONDS - t0)) s"
}

# -- Caikit: torch 2.13.0 (CPU wheel) first, then caikit/caikit-nlp & co. with --no-deps ------------
# caikit-nlp 0.5.15 declares torch<2.9.0 and numpy<2; we run it on torch 2.13.0 (the CPU wheel on
# disk), so the pinned packages go in with --no-deps and everything else is resolved under
# caikit-constraints.txt, which holds torch and the pinned packages in place.
CAIKIT_PINNED=(
  "caikit==0.28.3" "caikit-nlp==0.5.15" "transformers==4.49.0" "sentence-transformers==3.4.1"
  "peft==0.14.0" "numpy==1.26.4" "pyarrow==21.0.0"
)
# The rest, found by importing caikit_nlp's EmbeddingModule and caikit's gRPC + HTTP runtime:
# caikit's own requirements and its runtime-grpc / runtime-http extras, transformers' requirements,
# caikit-tgis-backend (imported by caikit_nlp.model_management), accelerate (peft), scikit-learn,
# scipy and Pillow (sentence-transformers), datasets (caikit_nlp toolkit).
CAIKIT_DEPS=(
  "alchemy-config>=1.1.1,<2" "alchemy-logging>=1.3.2,<2" "anytree>=2.7,<3" "docstring-parser>=0.14.1,<0.17"
  "grpcio>=1.62.2,<3" "ijson>=3.1.4,<3.3" "importlib-metadata>=6.8,<8" "munch>=2.5,<5" "protobuf>=4,<7"
  "psutil>=5,<6" "py-to-proto>=0.5,<0.7" "PyYAML>=6,<7" "semver>=2.13,<4" six "tqdm>=4.67"
  "werkzeug>=2.3.7,<4"
  grpcio-health-checking grpcio-reflection prometheus_client py-grpc-prometheus
  "fastapi>=0.100,<1" uvicorn "pydantic>=2.8,<3" "requests>=2.28.2,<3" "sse-starlette>=1.6.1,<3"
  "typing_extensions>=4.12,<5"
  "tokenizers>=0.21,<0.22" "huggingface-hub>=0.26,<1.0" "safetensors>=0.4.1" regex filelock packaging
  "caikit-tgis-backend>=0.1.36,<0.2" accelerate scikit-learn scipy Pillow datasets
)

caikit_ok() {
  "$CAIKIT_VENV/bin/python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
import torch
assert torch.__version__.startswith("2.13.0") and torch.version.cuda is None, torch.__version__
for name, want in {"caikit": "0.28.3", "caikit-nlp": "0.5.15", "transformers": "4.49.0",
                   "sentence-transformers": "3.4.1", "peft": "0.14.0", "numpy": "1.26.4",
                   "pyarrow": "21.0.0"}.items():
    assert version(name) == want, (name, version(name))
from caikit_nlp.modules.text_embedding import EmbeddingModule  # noqa: F401
import caikit.runtime.grpc_server, caikit.runtime.http_server  # noqa: F401
EOF
}

install_caikit() {
  if caikit_ok; then say "caikit venv already complete"; return; fi
  local t0=$SECONDS pip="$CAIKIT_VENV/bin/pip" c="$HERE/caikit-constraints.txt"
  pipq "$pip" install -q "torch==2.13.0" -c "$c"
  "$CAIKIT_VENV/bin/python" -W ignore -c 'import torch,sys; sys.exit(torch.version.cuda is not None)' 2>/dev/null \
    || { say "a CUDA torch got in; refusing"; exit 1; }
  pipq "$pip" install -q --no-deps "${CAIKIT_PINNED[@]}" -c "$c"
  # pip's resolver reports caikit-nlp's torch<2.9.0 pin here; that one conflict is expected.
  "$pip" install -q "${CAIKIT_DEPS[@]}" -c "$c" 2>&1 \
    | { grep -vE "is neither a file|dependency resolver does not|caikit-nlp 0.5.15 requires torch" || true; }
  caikit_ok || { say "caikit venv does not import; see above"; exit 1; }
  say "caikit venv installed in $((SECONDS - t0)) s"
}

# -- ONNX Runtime GenAI 0.18.0 and its model builder ----------------------------------------------
# Its own venv: onnxruntime-genai 0.18.0 runs on our onnxruntime 1.32.0, but its model builder
# imports transformers 5 (Qwen3.5 classes), and Taskgate pins transformers 4.57.6.
GENAI_PINNED=(
  "onnxruntime-genai==0.18.0" "onnxruntime==1.32.0" "onnx-ir==1.1.0" "onnx==1.23.2"
  "transformers==5.23.0" "torch==2.13.0" "numpy==2.4.6"
)
genai_ok() {
  "$GENAI_VENV/bin/python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
import onnxruntime_genai, onnx_ir, transformers, torch  # noqa: F401
assert version("onnxruntime-genai") == "0.18.0" and version("onnxruntime") == "1.32.0"
assert version("transformers") == "5.23.0" and torch.version.cuda is None
EOF
}

install_genai() {
  if genai_ok; then say "genai venv already complete"; return; fi
  local t0=$SECONDS
  pipq "$GENAI_VENV/bin/pip" install -q "${GENAI_PINNED[@]}"
  genai_ok || { say "genai venv does not import; see above"; exit 1; }
  say "genai venv installed in $((SECONDS - t0)) s"
}

# -- llama-cpp-python 0.3.36 with its OpenAI-compatible server ---------------------------------
llamacpp_ok() {
  "$LLAMACPP_VENV/bin/python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
import llama_cpp.server  # noqa: F401
assert version("llama-cpp-python") == "0.3.36"
EOF
}

install_llamacpp() {
  if llamacpp_ok; then say "llamacpp venv already complete"; return; fi
  local t0=$SECONDS
  say "building llama-cpp-python 0.3.36 from source (nice 19, one job)"
  CMAKE_ARGS="-DGGML_NATIVE=ON" MAKEFLAGS=-j1 CMAKE_BUILD_PARALLEL_LEVEL=1 \
    pipq nice -n 19 "$LLAMACPP_VENV/bin/pip" install -q "llama-cpp-python[server]==0.3.36"
  llamacpp_ok || { say "llamacpp venv does not import; see above"; exit 1; }
  say "llamacpp venv installed in $((SECONDS - t0)) s"
}

if [ "$WHICH" = all ] || [ "$WHICH" = genai ]; then
  make_venv "$GENAI_VENV"
  with_lock "$GENAI_VENV" install_genai
fi
if [ "$WHICH" = all ] || [ "$WHICH" = llamacpp ]; then
  make_venv "$LLAMACPP_VENV"
  with_lock "$LLAMACPP_VENV" install_llamacpp
fi
if [ "$WHICH" = all ] || [ "$WHICH" = kserve ]; then
  make_venv "$KSERVE_VENV"
  with_lock "$KSERVE_VENV" install_kserve
fi
if [ "$WHICH" = all ] || [ "$WHICH" = caikit ]; then
  make_venv "$CAIKIT_VENV"
  with_lock "$CAIKIT_VENV" install_caikit
  # Bootstrap + save the Caikit model (skipped when bench/.peer-models/caikit/all-MiniLM-L6-v2 exists).
  "$CAIKIT_VENV/bin/python" "$HERE/caikit_server.py" --bootstrap-only 2>&1 | grep -v "BETA phase" || true
  [ -f "$ROOT/bench/.peer-models/caikit/all-MiniLM-L6-v2/config.yml" ] \
    || { say "caikit model bootstrap failed"; exit 1; }
fi
say "done"
