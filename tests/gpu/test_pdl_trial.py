"""bench/pdl_trial.py without a GPU: a typed refusal, not a trace."""

import logging

from tests.gpu.helpers import bench_module


def test_without_a_cuda_device_it_refuses_and_writes_nothing(tmp_path, monkeypatch, caplog):
    pt = bench_module("pdl_trial")
    monkeypatch.setattr(pt.torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.ERROR, logger="bench.pdl_trial"):
        assert pt.main(["--out", str(tmp_path / "t.json"), "--repeat", "2"]) == 2
    assert "needs a CUDA device" in caplog.text
    assert not (tmp_path / "t.json").exists()
