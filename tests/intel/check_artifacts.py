"""Load artifacts in a fresh process (the intel environment) and compare each with its eager zoo model.

    services/intel/.venv/bin/python tests/intel/check_artifacts.py ITEMS_JSON
ITEMS_JSON: [[path, format, zoo_name, input_spec_json], ...]. Prints one JSON list of metrics (or
{"error": ...} for an artifact that does not load) on its last line. Loading goes through the public
kpt.optimize.artifacts.load only: IPEX is imported by that loader when an archive needs it.
"""

import json
import sys

import torch

from kpt.errors import KptError
from kpt.optimize import accuracy, artifacts, inputs, zoo


def check(path: str, fmt: str, name: str, spec_json: str) -> dict:
    spec = inputs.parse(json.loads(spec_json))
    ref, _ = zoo.build(name)
    try:
        candidate = artifacts.load(path, fmt)
    except KptError as e:
        return {"error": e.to_dict()}
    worst = None
    for seed in (4321, 8765):  # seeds the service never used for its own checks
        x = inputs.generate(spec, seed, vary_dynamic=seed == 8765)
        with torch.no_grad():
            m = accuracy.compare(candidate(*x), ref(*x))
        worst = m if worst is None else worst.worst(m)
    return {"max_abs_err": worst.max_abs_err, "rel_l2": worst.rel_l2, "cosine": worst.cosine,
            "sqnr_db": worst.sqnr_db}


def main(items_path: str) -> None:
    with open(items_path) as f:
        items = json.load(f)
    sys.stdout.write(json.dumps([check(*item) for item in items]) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
