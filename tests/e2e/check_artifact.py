"""Load an artifact in a fresh process and compare it with eager fp32 on fresh inputs.

    <service python> check_artifact.py ARTIFACT FORMAT REFERENCE INPUT_SPEC_JSON
REFERENCE is a .pt2 (the uploaded ExportedProgram) or zoo:NAME. Prints the metrics as JSON.
"""

import json
import sys

import torch

from kpt.optimize import accuracy, artifacts, inputs, loading, zoo


def main(path: str, fmt: str, reference: str, spec_json: str) -> None:
    spec = inputs.parse(json.loads(spec_json))
    if reference.startswith("zoo:"):
        ref, _ = zoo.build(reference[4:])
    else:
        ref = loading.load_exported_program(reference).module()
    candidate = artifacts.load(path, fmt)
    worst = None
    for seed in (1234, 5678):  # seeds the service never used for its own check
        x = inputs.generate(spec, seed)
        with torch.no_grad():
            m = accuracy.compare(candidate(*x), ref(*x))
        worst = m if worst is None else worst.worst(m)
    sys.stdout.write(json.dumps({"max_abs_err": worst.max_abs_err, "rel_l2": worst.rel_l2,
                                 "cosine": worst.cosine, "sqnr_db": worst.sqnr_db}) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:5])
