#!/usr/bin/env bash
# The one generator of contract code: protos/kpt/v1/*.proto -> shared/kpt/v1/*_pb2{,_grpc}.py{,i}.
# Output is committed; CI runs this and fails on any diff (make check-protos).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=shared/kpt/v1
rm -f "$out"/*_pb2*.py "$out"/*_pb2*.pyi
"$PY" -m grpc_tools.protoc -I protos \
  --python_out=shared --pyi_out=shared --grpc_python_out=shared \
  protos/kpt/v1/*.proto
touch "$out/__init__.py"
