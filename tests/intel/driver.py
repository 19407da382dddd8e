"""Run intel jobs through kpt_intel.jobs.run inside the intel service's environment (torch 2.8 + IPEX).

    services/intel/.venv/bin/python tests/intel/driver.py JOBS_JSON OUT_JSON
JOBS_JSON: {"name": {"workdir": ..., "job": <kpt.v1.Job dict>, "model_path": ..., "upload_zoo": ...}, ...};
with upload_zoo, that zoo model is first torch.export-ed to model_path here (what a user would upload). OUT_JSON gets, per name, either
{"result": <kpt.v1.Result dict>, "events": [...]} or {"error": {"code": ..., "message": ...}}; each result is
parsed into kpt.v1.Result first (a valid message, nothing extra).
"""

import json
import os
import sys

from google.protobuf import json_format

from kpt.errors import KptError
from kpt.optimize import zoo
from kpt.v1 import job_pb2
from kpt_intel import jobs


def main(jobs_path: str, out_path: str) -> None:
    with open(jobs_path) as f:
        todo = json.load(f)
    out = {}
    for name, item in todo.items():
        events = []
        if item.get("upload_zoo") and not os.path.exists(item["model_path"]):
            zoo.export(item["upload_zoo"], item["model_path"])
        try:
            result = jobs.run(item["job"], item.get("model_path"), item["workdir"],
                              lambda phase, msg, progress, ev=events: ev.append([phase, msg, progress]))
            json_format.ParseDict(result, job_pb2.Result())
            out[name] = {"result": result, "events": events}
        except KptError as e:
            out[name] = {"error": e.to_dict(), "events": events}
        with open(out_path, "w") as f:  # written after every job: a crash still leaves the earlier ones
            json.dump(out, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
