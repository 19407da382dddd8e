import pytest
import torch
from torch import nn

from kpt.optimize import graph_passes, zoo
from kpt.optimize import inputs as inp
from kpt.optimize.passes import Work, apply

BN_OPS = {torch.ops.aten.batch_norm.default, torch.ops.aten._native_batch_norm_legit_no_training.default}


def bn_count(gm) -> int:
    return sum(1 for n in gm.graph.nodes if n.target in BN_OPS)


def exported_module(model, x):
    return torch.export.export(model.eval(), (x,)).module()


def test_fold_removes_every_bn_and_keeps_outputs():
    model, spec = zoo.build("cnn")
    x = inp.generate(spec, seed=5)[0]
    gm = exported_module(model, x)
    assert bn_count(gm) == 3
    folded = graph_passes.fold_conv_bn(gm)
    assert len(folded) == 3 and bn_count(gm) == 0
    assert not any("running_mean" in name for name, _ in gm.named_buffers())
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)


def test_fold_handles_transposed_and_biased_convs_and_decomposed_bn():
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2), nn.BatchNorm2d(6), nn.ReLU())
    bn = model[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 5, 5)
    ep = torch.export.export(model.eval(), (x,)).run_decompositions()  # BN as _native_batch_norm_legit_no_training
    gm = ep.module()
    assert bn_count(gm) == 1
    assert graph_passes.fold_conv_bn(gm) and bn_count(gm) == 0
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)


def test_conv_feeding_two_users_is_left_alone():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # the conv output is needed unnormalized too

    model, x = Branch().eval(), torch.randn(1, 3, 8, 8)
    gm = exported_module(model, x)
    assert graph_passes.fold_conv_bn(gm) == [] and bn_count(gm) == 1


def test_fold_pass_report_and_reexport(tmp_path):
    model, spec = zoo.build("cnn")
    work = Work(model, spec, "cpu", str(tmp_path))
    row = apply(graph_passes.FoldConvBatchNorm(), work, "LEVEL_O1")
    assert row["applied"] and "folded 3" in row["reason"] and row["level"] == "LEVEL_O1"
    ep = work.export()  # the folded graph exports again, dynamic batch intact
    assert bn_count(ep.graph_module) == 0
    x = inp.generate(spec, seed=9, vary_dynamic=True)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(*x), model(*x), rtol=1e-5, atol=1e-5)
    mlp = Work(zoo.build("mlp")[0], zoo.build("mlp")[1], "cpu", str(tmp_path))
    row = apply(graph_passes.FoldConvBatchNorm(), mlp, "LEVEL_O1")
    assert not row["applied"] and "no batchnorm layers" in row["reason"]  # told without exporting
    mlp.module = mlp.export().module()  # a graph is looked at: here it has no pairs either
    row = apply(graph_passes.FoldConvBatchNorm(), mlp, "LEVEL_O1")
    assert not row["applied"] and "no eval-mode conv+batchnorm" in row["reason"]


def test_fold_does_not_export_a_model_without_batchnorm(tmp_path, monkeypatch):
    model, spec = zoo.build("mlp")
    monkeypatch.setattr(Work, "export", lambda self: pytest.fail("exported a model with no batchnorm"))
    assert not apply(graph_passes.FoldConvBatchNorm(), Work(model, spec, "cpu", str(tmp_path)), "LEVEL_O1")["applied"]
