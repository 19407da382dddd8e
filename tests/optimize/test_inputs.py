import pytest
import torch

from kpt.errors import InvalidInput
from kpt.optimize import inputs as inp


def spec_dict() -> dict:
    # the protobuf JSON form: int64 as strings, defaults omitted
    return {"tensors": [
        {"name": "ids", "dtype": "int64", "low": "5", "high": "9",
         "dims": [{"name": "batch", "size": "2", "min": "1", "max": "4"}, {"size": "16"}]},
        {"name": "x", "dtype": "float32", "dims": [{"name": "batch", "size": "2", "min": "1", "max": "4"},
                                                   {"name": "feat", "size": "3", "min": "3", "max": "7"}]},
    ]}


def test_parse_reads_protobuf_json_with_defaults():
    spec = inp.parse(spec_dict())
    ids, x = spec.tensors
    assert ids.dims[0] == inp.Dim(2, 1, 4, "batch") and not ids.dims[1].dynamic and ids.dims[1].size == 16
    assert (ids.low, ids.high) == (5, 9) and x.torch_dtype == torch.float32


def test_generate_is_deterministic_and_respects_dtype_and_range():
    spec = inp.parse(spec_dict())
    a, b = inp.generate(spec, seed=3), inp.generate(spec, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    ids, x = a
    assert ids.dtype == torch.int64 and ids.shape == (2, 16)
    assert int(ids.min()) >= 5 and int(ids.max()) <= 8
    assert x.shape == (2, 3) and x.dtype == torch.float32
    assert not torch.equal(inp.generate(spec, seed=4)[1], x)


def test_dynamic_dims_vary_within_range_and_equal_names_share_a_size():
    spec = inp.parse(spec_dict())
    seen_batch, seen_feat = set(), set()
    for seed in range(40):
        ids, x = inp.generate(spec, seed=seed, vary_dynamic=True)
        assert ids.shape[0] == x.shape[0]  # "batch" is one symbol
        assert 1 <= x.shape[0] <= 4 and 3 <= x.shape[1] <= 7 and ids.shape[1] == 16
        seen_batch.add(x.shape[0])
        seen_feat.add(x.shape[1])
    assert seen_batch == {1, 2, 3, 4} and len(seen_feat) >= 4


def test_export_example_avoids_zero_one_specialization():
    spec = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(1, 1, 8, "b"), inp.Dim(4))),))
    assert inp.generate(spec, 0)[0].shape == (1, 4)
    assert inp.generate(spec, 0, for_export=True)[0].shape == (2, 4)


def test_dynamic_shapes_share_one_symbol_per_name():
    ds = inp.dynamic_shapes(inp.parse(spec_dict()))
    assert ds[0][0] is ds[1][0]
    assert 1 not in ds[0] and set(ds[1]) == {0, 1}
    static = inp.InputSpec((inp.TensorSpec("x", "float32", (inp.Dim(2),)),))
    assert inp.dynamic_shapes(static) is None


@pytest.mark.parametrize("bad, words", [
    ({"tensors": []}, "empty"),
    ({"tensors": [{"name": "ids", "dtype": "int64", "dims": [{"size": "3"}]}]}, "low/high"),
    ({"tensors": [{"name": "x", "dtype": "complex32", "dims": []}]}, "unknown dtype"),
    ({"tensors": [{"name": "x", "dims": [{"size": "9", "min": "1", "max": "4"}]}]}, "must lie in"),
    ({"tensors": [{"name": "a", "dims": [{"name": "b", "size": "2", "min": "1", "max": "4"}]},
                  {"name": "c", "dims": [{"name": "b", "size": "2", "min": "1", "max": "8"}]}]}, "one range"),
])
def test_invalid_specs_raise_invalid_input_saying_what_to_fix(bad, words):
    with pytest.raises(InvalidInput, match=words):
        inp.parse(bad)


def test_float_range_and_bool_inputs():
    spec = inp.InputSpec((inp.TensorSpec("u", "float32", (inp.Dim(1000),), low=2, high=3),
                          inp.TensorSpec("m", "bool", (inp.Dim(10),))))
    u, m = inp.generate(spec, 0)
    assert 2 <= float(u.min()) and float(u.max()) < 3 and m.dtype == torch.bool


def test_to_dict_round_trips():
    spec = inp.parse(spec_dict())
    assert inp.parse(inp.to_dict(spec)) == spec
