"""The kpt:: ops' schemas: what the dispatcher needs of them on every torch the services run."""

import importlib
import pkgutil

import torch

import kernels


def _kpt_ops():
    for mod in pkgutil.iter_modules(kernels.__path__):
        importlib.import_module(f"kernels.{mod.name}")
    for name in dir(torch.ops.kpt):
        packet = getattr(torch.ops.kpt, name)
        if isinstance(packet, torch._ops.OpOverloadPacket):
            yield name, packet.default._schema


def test_no_mutated_argument_has_a_default():
    # torch 2.11's dispatcher drops trailing arguments equal to their defaults before the ADInplaceOrView kernel of a
    # custom op indexes its mutated arguments: kpt::decode_attention with counters=None (a mutated argument with a
    # default, at its default) failed on the H200 with IndexError (2026-12-05). Stripping stops at an argument
    # without a default, so a mutated argument without one is always there.
    ops = dict(_kpt_ops())
    assert {"decode_attention", "gemv_qkv", "layer_chain", "mlp_chain"} <= set(ops)
    bad = []
    for name, schema in ops.items():
        args = schema.arguments
        bad += [f"{name}.{a.name}" for a in args
                if a.alias_info is not None and a.alias_info.is_write and a.has_default_value()]
    assert not bad, f"mutated arguments with a default: {bad}"


def test_launch_sends_only_traced_calls_through_wrap_triton(monkeypatch):
    # A real call outside torch.compile/export launches the kernel itself: through wrap_triton's higher-order op each
    # eager call of attention's autotuned kernel took 640-780 ms on the H200 (the registry times attention._run).
    from torch._subclasses.fake_tensor import FakeTensorMode

    from kernels import _common, attention

    monkeypatch.setattr(_common, "interpreting", lambda: False)
    monkeypatch.setattr(torch.library, "wrap_triton", lambda k: ("wrapped", k))
    kernel = attention._attn_fwd
    real = torch.ones(2)
    assert _common.launch(kernel, real, None) is kernel
    assert _common.launch(kernel) == ("wrapped", kernel)  # nothing to judge by: the traceable launch
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(real)
        assert _common.launch(kernel, fake) == ("wrapped", kernel)
