import re

import pytest
import torch

from kpt.errors import InvalidArgument, InvalidInput, Unsupported
from kpt.optimize import inputs as inp
from kpt.optimize import loading, source


def test_spec_derived_from_an_uploaded_program(mlp_pt2):
    src = source.from_exported_program(mlp_pt2, "abc", "mlp.pt2", None)
    (x,) = src.spec.tensors
    assert x.dtype == "float32" and len(x.dims) == 2
    batch, feat = x.dims
    assert batch.dynamic and (batch.min, batch.max, batch.size) == (1, 64, 8) and feat == inp.Dim(64)
    out = src.module(*inp.generate(src.spec, seed=1, vary_dynamic=True))
    assert out.shape[1] == 10


class Emb(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.e = torch.nn.Embedding(100, 4)

    def forward(self, ids):
        return self.e(ids)


def test_integer_inputs_take_their_range_from_recorded_examples(tmp_path):
    path = str(tmp_path / "emb.pt2")
    torch.export.save(torch.export.export(Emb(), (torch.tensor([[3, 7, 42]]),)), path)
    (ids,) = source.derive_spec(loading.load_exported_program(path)).tensors
    assert (ids.dtype, ids.low, ids.high) == ("int64", 3, 43)


def test_without_recorded_examples_integer_ranges_must_be_given():
    ep = torch.export.export(Emb(), (torch.tensor([[3, 7, 42]]),))
    ep.example_inputs = None
    with pytest.raises(InvalidInput, match="give input specs with low/high"):
        source.derive_spec(ep)


@pytest.mark.parametrize("dims, words", [
    ([{"size": "8"}, {"size": "32"}], r"input #0 'x'.*dim 1 is 32 .*expects exactly 64"),
    ([{"size": "8"}], r"1 dims given .*expects 2"),
    ([{"size": "8", "min": "1", "max": "128"}, {"size": "64"}], r"range \[1, 128\].*outside the model's \[1, 64\]"),
])
def test_wrong_shapes_name_the_tensor_and_the_expected_shape(mlp_pt2, dims, words):
    spec = inp.parse({"tensors": [{"name": "x", "dtype": "float32", "dims": dims}]})
    with pytest.raises(InvalidInput, match=words) as e:
        source.from_exported_program(mlp_pt2, "abc", "mlp.pt2", spec)
    assert re.search(r"model: input: float32\[\w+\[1\.\.64\], 64\]", e.value.message)  # the expected shape


def test_wrong_dtype_and_count(mlp_pt2):
    spec = inp.parse({"tensors": [{"name": "x", "dtype": "int64", "low": "0", "high": "3",
                                   "dims": [{"size": "8"}, {"size": "64"}]}]})
    with pytest.raises(InvalidInput, match="dtype int64 given, the model expects float32"):
        source.from_exported_program(mlp_pt2, "abc", "mlp.pt2", spec)
    two = inp.parse({"tensors": [{"name": "x", "dims": [{"size": "8"}, {"size": "64"}]},
                                 {"name": "y", "dims": [{"size": "1"}]}]})
    with pytest.raises(InvalidInput, match="takes 1 inputs"):
        source.from_exported_program(mlp_pt2, "abc", "mlp.pt2", two)


def test_keyword_inputs_are_unsupported(tmp_path):
    class K(torch.nn.Module):
        def forward(self, x, *, y):
            return x + y

    path = str(tmp_path / "k.pt2")
    torch.export.save(torch.export.export(K(), (torch.ones(2),), {"y": torch.ones(2)}), path)
    with pytest.raises(Unsupported, match="keyword inputs"):
        source.from_exported_program(path, "d", "k.pt2", None)


def test_zoo_and_unknown_names():
    src = source.open_source("MODEL_FORMAT_ZOO", "cnn", "", None, None)
    assert src.digest == "zoo:cnn" and src.spec.tensors[0].dims[1].size == 3
    with pytest.raises(InvalidArgument, match="unknown zoo model"):
        source.open_source("MODEL_FORMAT_ZOO", "resnet9000", "", None, None)


def test_onnx_source_needs_specs_for_symbolic_dims(tmp_path):
    from kpt.optimize import export

    src = source.from_zoo("mlp", None)
    path = export.EXPORTERS[export.OnnxExport](export.OnnxExport(), src, str(tmp_path / "m.onnx"))
    with pytest.raises(InvalidInput, match="symbolic dims"):
        source.open_source("MODEL_FORMAT_ONNX", "m.onnx", "d", path, None)
    onnx_src = source.open_source("MODEL_FORMAT_UNSPECIFIED", "m.onnx", "d", path, src.spec)
    assert onnx_src.module is None and onnx_src.onnx_path == path
