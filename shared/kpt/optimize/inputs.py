"""Input specs (kpt.v1.InputSpec) as validated dataclasses, and the tensors they describe.

A spec says, per positional input: dtype, dims (static, or dynamic in [min, max] with an example
size; equal dim names share one symbol) and, for integer inputs, the value range [low, high).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from kpt.errors import InvalidInput

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float": torch.float32, "float64": torch.float64,
    "float16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Dim:
    size: int = 0  # the example size (static size when min == max == 0)
    min: int = 0
    max: int = 0
    name: str = ""  # equal names share one symbol

    def __post_init__(self) -> None:
        if min(self.size, self.min, self.max) < 0:
            raise ValueError(f"dim {self.name or '?'}: sizes must be >= 0, got {self}")
        if self.dynamic and not self.min <= self.example <= self.max:
            raise ValueError(f"dim {self.name or '?'}: example size {self.example} must lie in "
                             f"[min={self.min}, max={self.max}]; fix size/min/max")

    @property
    def dynamic(self) -> bool:
        return not (self.min == 0 and self.max == 0)

    @property
    def example(self) -> int:
        return self.size if self.size or not self.dynamic else max(self.min, 1)

    def describe(self) -> str:
        if not self.dynamic:
            return str(self.size)
        return f"{self.name or 'dyn'}[{self.min}..{self.max}]"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    dims: tuple[Dim, ...]
    low: int = 0  # values drawn from [low, high): required for integer inputs
    high: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"input {self.name!r}: unknown dtype {self.dtype!r}; use one of {sorted(DTYPES)}")
        if self.high < self.low:
            raise ValueError(f"input {self.name!r}: high ({self.high}) < low ({self.low})")
        if self.is_integer and self.torch_dtype != torch.bool and self.high <= self.low:
            raise ValueError(f"input {self.name!r} is {self.dtype}: give its value range with low/high "
                             "(e.g. token ids low=0 high=vocab_size)")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def is_integer(self) -> bool:
        return not self.torch_dtype.is_floating_point

    def describe(self) -> str:
        return f"{self.name}: {self.dtype}[{', '.join(d.describe() for d in self.dims)}]"


@dataclass(frozen=True)
class InputSpec:
    tensors: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        if not self.tensors:
            raise ValueError("input spec is empty: give one tensor spec per positional model input")
        ranges: dict[str, tuple[int, int]] = {}
        for t in self.tensors:
            for d in t.dims:
                if d.dynamic and d.name:
                    if ranges.setdefault(d.name, (d.min, d.max)) != (d.min, d.max):
                        raise ValueError(f"dim {d.name!r} has two ranges {ranges[d.name]} and {(d.min, d.max)}; "
                                         "equal names share one symbol, so give them one range")

    def describe(self) -> str:
        return "; ".join(t.describe() for t in self.tensors)


def parse(d: dict) -> InputSpec:
    """An InputSpec from its protobuf JSON dict; InvalidInput says what is wrong."""
    try:
        return InputSpec(tuple(
            TensorSpec(
                name=t.get("name", "") or f"input{i}",
                dtype=t.get("dtype", "float32") or "float32",
                dims=tuple(Dim(int(x.get("size", 0)), int(x.get("min", 0)), int(x.get("max", 0)), x.get("name", ""))
                           for x in t.get("dims", [])),
                low=int(t.get("low", 0)), high=int(t.get("high", 0)))
            for i, t in enumerate(d.get("tensors", []))))
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"invalid input spec: {e}") from e


def to_dict(spec: InputSpec) -> dict:
    return {"tensors": [
        {"name": t.name, "dtype": t.dtype, "low": str(t.low), "high": str(t.high),
         "dims": [{"name": d.name, "size": str(d.size), "min": str(d.min), "max": str(d.max)} for d in t.dims]}
        for t in spec.tensors]}


def _symbol(t: TensorSpec, axis: int, d: Dim) -> str:
    return d.name or f"{t.name}_{axis}"


def sizes(spec: InputSpec, gen: torch.Generator | None = None, for_export: bool = False) -> dict[str, int]:
    """One size per dynamic symbol: the example size, or (with gen) a random size in range.

    for_export bumps an example of 0 or 1 to 2 where the range allows: torch.export would
    otherwise specialize the dim to that constant.
    """
    out: dict[str, int] = {}
    for t in spec.tensors:
        for axis, d in enumerate(t.dims):
            if not d.dynamic or _symbol(t, axis, d) in out:
                continue
            if gen is not None:
                # an unbounded model dim (max = 2**63-1) is sampled up to twice its example size
                hi = min(d.max, max(2 * d.example, d.min))
                n = int(torch.randint(d.min, hi + 1, (1,), generator=gen))
            else:
                n = d.example
                if for_export and n < 2 <= d.max:
                    n = 2
            out[_symbol(t, axis, d)] = n
    return out


def shape(t: TensorSpec, chosen: dict[str, int]) -> tuple[int, ...]:
    return tuple(chosen[_symbol(t, i, d)] if d.dynamic else d.size for i, d in enumerate(t.dims))


def generate(spec: InputSpec, seed: int, device: str = "cpu", vary_dynamic: bool = False,
             for_export: bool = False) -> tuple[torch.Tensor, ...]:
    """Deterministic inputs for one seed. vary_dynamic draws dynamic sizes at random within range."""
    gen = torch.Generator().manual_seed(seed)
    chosen = sizes(spec, gen if vary_dynamic else None, for_export=for_export)
    out = []
    for t in spec.tensors:
        shp = shape(t, chosen)
        try:
            if t.torch_dtype == torch.bool:
                x = torch.randint(0, 2, shp, generator=gen).bool()
            elif t.is_integer:
                x = torch.randint(t.low, t.high, shp, generator=gen, dtype=torch.int64).to(t.torch_dtype)
            elif t.high > t.low:
                x = (torch.rand(shp, generator=gen, dtype=torch.float32) * (t.high - t.low) + t.low).to(t.torch_dtype)
            else:
                x = torch.randn(shp, generator=gen, dtype=torch.float32).to(t.torch_dtype)
            out.append(x.to(device))
        except RuntimeError as e:  # the allocator's "can't allocate memory", a size overflow
            raise InvalidInput(f"input {t.name!r}: a {t.dtype} tensor of shape {list(shp)} cannot be allocated here "
                               f"({str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}); "
                               "give smaller sizes in the input spec") from e
    return tuple(out)


def dynamic_shapes(spec: InputSpec) -> tuple[dict[int, object] | None, ...] | None:
    """torch.export dynamic_shapes for the spec (None when every dim is static)."""
    symbols: dict[str, object] = {}
    out = []
    for t in spec.tensors:
        axes = {}
        for axis, d in enumerate(t.dims):
            if d.dynamic:
                sym = _symbol(t, axis, d)
                ident = re.sub(r"\W", "_", sym)
                ident = ident if ident[:1].isalpha() else f"d_{ident}"
                symbols.setdefault(sym, torch.export.Dim(ident, min=d.min, max=d.max))
                axes[axis] = symbols[sym]
        out.append(axes or None)
    return tuple(out) if symbols else None


def batch_size(spec: InputSpec) -> int:
    """The leading example dim of the first input (what throughput counts), 1 for scalars."""
    dims = spec.tensors[0].dims
    return max(dims[0].example, 1) if dims else 1


def to_json(spec: InputSpec) -> str:
    import json

    return json.dumps(to_dict(spec), sort_keys=True)
