"""bench/pdl_trial.py and bench/capture_probe.py without a GPU: a clear refusal, not a trace."""

import logging

from tests.gpu.helpers import bench_module


def test_without_a_cuda_device_it_refuses_and_writes_nothing(tmp_path, monkeypatch, caplog):
    pt = bench_module("pdl_trial")
    monkeypatch.setattr(pt.torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.ERROR, logger="bench.pdl_trial"):
        assert pt.main(["--out", str(tmp_path / "t.json"), "--repeat", "2"]) == 2
    assert "needs a CUDA device" in caplog.text
    assert not (tmp_path / "t.json").exists()


def test_capture_probe_without_a_cuda_device_refuses_and_writes_nothing(tmp_path, monkeypatch, caplog):
    cp = bench_module("capture_probe")
    monkeypatch.setattr(cp.torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.ERROR, logger="bench.capture_probe"):
        assert cp.main(["--out", str(tmp_path / "c.json")]) == 2
    assert "needs a CUDA device" in caplog.text and not (tmp_path / "c.json").exists()
