"""The level ladder, with test passes instead of compilers (fast): fallback, reports, refusal."""

import json
import os
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from google.protobuf import json_format

from kpt.errors import AccuracyFailed, Unsupported
from kpt.optimize import bench, inductor, passes, pipeline, source
from kpt.optimize.graph_passes import SaveExportedProgram
from kpt.v1 import job_pb2

FAST = bench.Settings(warmup_iters=1, min_iters=5, max_iters=50, time_budget_s=0.5)


class AddBias(torch.nn.Module):
    def __init__(self, inner, bias):
        super().__init__()
        self.inner, self.bias = inner, bias

    def forward(self, x):
        return self.inner(x) + self.bias


@dataclass(frozen=True)
class Perturb(passes.PassConfig):
    name: ClassVar[str] = "test_perturb"
    amount: float = 0.1


@passes.register(Perturb)
def _perturb(cfg, work):
    work.module = AddBias(work.module, cfg.amount)
    return passes.Outcome(True, f"added {cfg.amount}")


@dataclass(frozen=True)
class Explode(passes.PassConfig):
    name: ClassVar[str] = "test_explode"


@passes.register(Explode)
def _explode(cfg, work):
    raise RuntimeError("kernel generation failed\nsecond line")


LEVELS = {
    "LEVEL_O0": (SaveExportedProgram(),),
    "LEVEL_O1": (Explode(), SaveExportedProgram()),
    "LEVEL_O2": (Perturb(0.1), SaveExportedProgram()),
}


def events():
    seen = []
    return seen, lambda phase, msg, progress: seen.append((phase, msg, progress))


def test_ladder_falls_back_past_inaccurate_and_failing_levels(tmp_path):
    src = source.from_zoo("mlp", None)
    seen, emit = events()
    result = pipeline.optimize(src, LEVELS, "LEVEL_O2", "TARGET_CPU", "cpu", frozenset({"fp32"}), None, FAST,
                               str(tmp_path), emit)
    assert result["achieved_level"] == "LEVEL_O0" and result["requested_level"] == "LEVEL_O2"
    a2, a1, a0 = result["attempts"]
    assert (a2["level"], a2["passed"]) == ("LEVEL_O2", False) and a2["accuracy"]["max_abs_err"] == pytest.approx(0.1)
    assert (a1["level"], a1["passed"]) == ("LEVEL_O1", False) and "test_explode failed" in a1["note"]
    assert "RuntimeError: kernel generation failed" in a1["note"] and "second line" not in a1["note"]
    assert a0["passed"] and a0["accuracy"]["max_abs_err"] == 0.0
    assert "O2 outside tolerance" in result["fallback_reason"] and "fell back to O0" in result["fallback_reason"]
    rows = {(p["level"], p["name"]): p for p in result["passes"]}
    assert rows[("LEVEL_O1", "test_explode")]["reason"].startswith("failed:")
    assert rows[("LEVEL_O2", "test_perturb")]["applied"]
    assert json.loads(rows[("LEVEL_O2", "test_perturb")]["config_json"]) == {"pass": "test_perturb", "version": 1,
                                                                             "amount": 0.1}
    assert os.listdir(tmp_path) == ["model.pt2"]  # level folders removed, the artifact kept
    assert result["artifacts"][0]["metadata"]["level"] == "LEVEL_O0"
    assert [v["variant"] for v in result["variants"]] == ["kpt_O0"] and result["speedup"] == 1.0
    assert {p for p, _, _ in seen} >= {"pass", "validate", "benchmark", "export"}
    assert [x for _, _, x in seen] == sorted(x for _, _, x in seen)  # progress never goes back
    json_format.ParseDict(result, job_pb2.Result())  # the dict is a valid kpt.v1.Result


def test_loose_override_tolerance_lets_the_perturbed_level_pass(tmp_path):
    from kpt.optimize.accuracy import Tolerances

    src = source.from_zoo("mlp", None)
    result = pipeline.optimize(src, LEVELS, "LEVEL_O2", "TARGET_CPU", "cpu", frozenset({"fp32"}),
                               Tolerances(atol=0.2, min_cosine=0.1), FAST, str(tmp_path), events()[1])
    assert result["achieved_level"] == "LEVEL_O2" and result["fallback_reason"] == ""
    assert [v["variant"] for v in result["variants"]] == ["kpt_O0", "kpt_O2"]
    assert result["speedup"] > 0


def test_no_passing_level_is_accuracy_failed(tmp_path):
    src = source.from_zoo("mlp", None)
    bad = {"LEVEL_O0": (Perturb(1.0), SaveExportedProgram())}
    with pytest.raises(AccuracyFailed, match="no level produced an artifact within tolerance"):
        pipeline.optimize(src, bad, "LEVEL_O0", "TARGET_CPU", "cpu", frozenset({"fp32"}), None, FAST, str(tmp_path),
                          events()[1])


def test_registry_dispatches_on_config_type_and_refuses_duplicates(tmp_path):
    with pytest.raises(ValueError, match="already registered"):
        passes.register(Perturb)(lambda cfg, work: None)

    @dataclass(frozen=True)
    class Unregistered(passes.PassConfig):
        name: ClassVar[str] = "nobody"

    work = passes.Work(torch.nn.Linear(2, 2), source.from_zoo("mlp", None).spec, "cpu", str(tmp_path))
    with pytest.raises(Unsupported, match="no function registered"):
        passes.apply(Unregistered(), work, "LEVEL_O1")


def test_pass_configs_validate_themselves():
    with pytest.raises(ValueError, match="off, on or auto"):
        inductor.InductorAOT(max_autotune="sometimes")
    with pytest.raises(ValueError):
        inductor.InductorAOT(autotune_budget_s=0)


def test_max_autotune_is_kept_only_when_it_wins_on_median_and_minimum():
    default = [10.0, 10.2, 10.1, 30.0, 10.3]
    assert inductor.tuned_wins(default, [9.0, 9.1, 9.2, 9.0, 9.3])
    assert not inductor.tuned_wins(default, [9.95, 10.0, 10.05, 9.9, 10.0])  # within the 2% margin
    # a median that looks better only because background load hit the default's runs harder
    assert not inductor.tuned_wins([14.0, 14.5, 6.5, 14.2, 6.6], [13.0, 13.1, 13.2, 13.0, 13.3])
