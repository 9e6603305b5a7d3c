"""Shared machinery of the checkpoint converters: safe file loading and key-mapping tables.

A key-mapping table is data: a list of :class:`KeyRule` (source template, target template, transform). Templates are
key names with placeholders, so one table maps both ways (the reverse direction names the official key of a missing
parameter in error messages):

* ``{i}`` a block index (digits), ``{w}`` ``weight`` or ``bias``, ``{rest}`` any remaining key suffix;
* ``{qkv}`` (target side only) ``q``, ``k`` or ``v``: the source tensor is split in three along dim 0, in that order.

Transforms: ``"copy"``; ``"transpose"`` (OpenAI's ``x @ proj`` matrices become ``nn.Linear`` weights);
``"split_qkv"``; ``"optional"`` (copied when the target model has that parameter, dropped otherwise: the official
D_Block stores a 1x1 shortcut it never uses when its input and output widths are equal).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from functools import lru_cache
import zipfile
from typing import Any, Iterable, Mapping, NamedTuple

import torch
from torch import nn

from galip_core.finite import check_finite_tensor

logger = logging.getLogger(__name__)

_PLACEHOLDERS = {"i": r"\d+", "w": r"weight|bias", "rest": r".+", "qkv": r"q|k|v"}
_MAX_LISTED = 12


class ConversionError(ValueError):
    """The inputs cannot be converted; the message says which file or key and why."""


class KeyRule(NamedTuple):
    """One row of a key-mapping table: ``source`` (official name) -> ``target`` (ours), with a transform."""

    source: str
    target: str
    transform: str = "copy"


def prefixed(rules: Iterable[KeyRule], source_prefix: str, target_prefix: str) -> list[KeyRule]:
    """The same rules for a sub-module: both templates get a prefix (``"mapping.CLIP_ViT."``, ``"vision_model."``)."""
    return [KeyRule(source_prefix + r.source, target_prefix + r.target, r.transform) for r in rules]


@lru_cache(maxsize=None)
def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(
        re.escape(part) if k % 2 == 0 else f"(?P<{part}>{_PLACEHOLDERS[part]})" for k, part in enumerate(parts)
    )
    return re.compile(pattern)


def _fill(template: str, groups: Mapping[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: groups[m.group(1)], template)


def _match(key: str, rules: Iterable[KeyRule], side: str) -> tuple[KeyRule, dict[str, str]] | None:
    for rule in rules:
        found = _compile(getattr(rule, side)).fullmatch(key)
        if found:
            return rule, found.groupdict()
    return None


def source_name(target_key: str, rules: Iterable[KeyRule]) -> str:
    """The official key that ``target_key`` comes from (reverse lookup of the table), for error messages."""
    hit = _match(target_key, rules, "target")
    return _fill(hit[0].source, hit[1]) if hit else f"<no rule produces {target_key!r}>"


def _listing(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_MAX_LISTED])
    return shown + (f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


def map_state_dict(
    source: Mapping[str, torch.Tensor],
    rules: list[KeyRule],
    expected: Mapping[str, torch.Size],
    what: str,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Map ``source`` (official names) to ``expected`` (target names and shapes) with ``rules``.

    Raises :class:`ConversionError` naming every missing and unexpected key (in official names), the first shape
    mismatch (both names and both shapes), or the first weight that is not floating point, not finite or beyond the
    range of ``dtype`` (the converted weights are stored as float32: a float64 ``1e300`` would become inf). Returned
    tensors never share memory (a checkpoint's tied tensors are cloned), so safetensors can save them.
    """
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unexpected: list[str] = []
    for key, tensor in source.items():
        hit = _match(key, rules, "source")
        if hit is None:
            unexpected.append(key)
            continue
        rule, groups = hit
        if not isinstance(tensor, torch.Tensor):
            shown = repr(tensor) if len(repr(tensor)) <= 40 else repr(tensor)[:37] + "..."
            raise ConversionError(f"{what}: {key!r} is not a tensor but {type(tensor).__name__} {shown}.")
        if rule.transform == "split_qkv":
            if tensor.shape[0] % 3:
                raise ConversionError(f"{what}: {key!r} has shape {tuple(tensor.shape)}, not 3 stacked q/k/v blocks.")
            for name, part in zip("qkv", tensor.chunk(3, dim=0)):
                target = _fill(rule.target, {**groups, "qkv": name})
                mapped[target], origin[target] = part.clone(), key
            continue
        target = _fill(rule.target, groups)
        if rule.transform == "optional" and target not in expected:
            logger.info("%s: dropping %r (unused by the official forward; no such parameter here).", what, key)
            continue
        mapped[target] = tensor.t().contiguous() if rule.transform == "transpose" else tensor
        origin[target] = key
    unexpected += sorted({origin[t] for t in mapped if t not in expected})
    missing = sorted({source_name(t, rules) for t in expected if t not in mapped})
    if missing or unexpected:
        found = sum(t in mapped for t in expected)
        lines = [f"{what}: the keys do not match ({found} of {len(expected)} expected parameters found)."]
        if missing:
            lines.append(f"Missing keys: {_listing(missing)}.")
        if unexpected:
            lines.append(f"Unexpected keys: {_listing(sorted(unexpected))}.")
        if found == 0:
            expected_names = sorted({source_name(t, rules) for t in expected})
            lines.append(f"Expected keys like: {_listing(expected_names)}.")
        raise ConversionError(" ".join(lines))
    for target, shape in expected.items():
        got = tuple(mapped[target].shape)
        if got != tuple(shape):
            raise ConversionError(
                f"{what}: shape mismatch for {origin[target]!r} (-> {target!r}): the file has {got}, "
                f"the model expects {tuple(shape)}."
            )
    used = {origin[t]: source[origin[t]] for t in expected}
    for key, tensor in used.items():
        if not tensor.is_floating_point():
            raise ConversionError(
                f"{what}: {key!r} has dtype {tensor.dtype}; the weights must be floating point (float32, float16 or "
                "bfloat16)."
            )
    check_finite_state(what, used)
    beyond = beyond_range(used, dtype)
    if beyond is not None:
        raise ConversionError(
            f"{what}: {beyond[0]!r} holds values up to {beyond[1]:.4g}, beyond {dtype_name(dtype)}'s range "
            f"({torch.finfo(dtype).max:.4g}); the converted {dtype_name(dtype)} weights would hold inf there."
        )
    return _unshared({k: mapped[k] for k in expected})


def beyond_range(state: Mapping[str, torch.Tensor], dtype: torch.dtype) -> tuple[str, float] | None:
    """The first floating-point tensor of ``state`` holding a value beyond ``dtype``'s range (a cast to ``dtype``
    would make it inf), with its largest magnitude; ``None`` if every tensor fits. Only tensors of a wider type are
    read (float64 for float32, float32 for float16), so the usual case costs nothing."""
    limit = torch.finfo(dtype).max
    for key, tensor in state.items():
        if tensor.is_floating_point() and tensor.numel() and torch.finfo(tensor.dtype).max > limit:
            peak = float(tensor.abs().max())
            if peak > limit:
                return key, peak
    return None


def dtype_name(dtype: torch.dtype) -> str:
    """``"float32"`` for ``torch.float32``: how the messages name a dtype."""
    return str(dtype).removeprefix("torch.")


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with a copy of each tensor whose memory an earlier one already uses (tied or shared tensors in the
    source file): safetensors refuses to save tensors that share memory, and would only say so after the whole
    conversion, in our key names."""
    seen: set[int] = set()
    for key, tensor in state.items():
        if not tensor.numel():
            continue
        address = tensor.untyped_storage().data_ptr()
        if address in seen:
            state[key] = tensor.clone()
        else:
            seen.add(address)
    return state


def check_finite_state(what: str, state: Mapping[str, torch.Tensor]) -> None:
    """``ConversionError`` naming every tensor of ``state`` that holds NaN or inf (corrupt weights must not be
    converted, let alone published), with the count of bad values in the first."""
    problems = []
    for key, tensor in state.items():
        try:
            check_finite_tensor(key, tensor)
        except ValueError as err:
            problems.append((key, str(err)))
    if problems:
        others = [k for k, _ in problems[1:]]
        more = f" Also non-finite: {_listing(others)}." if others else ""
        raise ConversionError(f"{what}: {problems[0][1].split(';')[0]}; the weights are corrupt.{more}")


def module_prefix(model: nn.Module, submodule: nn.Module) -> str:
    """The state-dict prefix of ``submodule`` inside ``model`` (found by identity, not by a hard-coded name)."""
    for name, module in model.named_modules():
        if module is submodule:
            return f"{name}." if name else ""
    raise ValueError(f"{type(submodule).__name__} is not a submodule of {type(model).__name__}.")


def expected_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """Names and shapes of the persistent state of ``model`` (works on meta-device models)."""
    return {k: v.shape for k, v in model.state_dict().items()}


def load_mapped(model: nn.Module, source: Mapping[str, torch.Tensor], rules: list[KeyRule], what: str) -> nn.Module:
    """Map ``source`` with ``rules`` and load it into ``model`` (strict; tensors assigned, so ``model`` may have been
    built on the meta device)."""
    state = map_state_dict(source, rules, expected_shapes(model), what)
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, p in model.named_parameters() if p.is_meta] + [n for n, b in model.named_buffers() if b.is_meta]
    if leftover:
        raise ConversionError(f"{what}: no weights for {_listing(leftover)}.")
    return model


def strip_prefix(state: Mapping[str, Any], prefix: str = "module.", what: str = "state dict") -> dict[str, Any]:
    """Remove a DDP ``module.`` prefix from the keys that carry it.

    ``ConversionError`` naming ``what`` (``"--checkpoint netG"``) for a key that is not a string, and for ``module.X``
    beside ``X``: keeping one of the two tensors would silently drop the other."""
    stripped: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise ConversionError(
                f"{what}: the key {key!r} is {type(key).__name__}, not a parameter name; a state dict maps names "
                "(str) to tensors."
            )
        name = key[len(prefix) :] if key.startswith(prefix) else key
        if name in stripped:
            raise ConversionError(
                f"{what}: both {prefix + name!r} and {name!r} are present, so one of the two tensors would be "
                f"dropped; keep one of them (with or without the DDP {prefix!r} prefix) in the file."
            )
        stripped[name] = value
    return stripped


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True for a TorchScript zip (``torch.jit.save``; OpenAI's ``ViT-B-32.pt``), False for ``torch.save`` files.

    TorchScript archives hold their code under ``<name>/code/`` (and usually ``<name>/constants.pkl``); plain
    ``torch.save`` zips hold only ``data.pkl`` and tensor records."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())


_UNSAFE_GLOBAL_RE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _refused_globals(path: str, err: Exception, is_zip: bool) -> list[str]:
    """The globals (classes, functions) of a pickle that ``weights_only=True`` refused to construct; ``[]`` when the
    load failed for another reason (the file is broken, or not a checkpoint at all)."""
    found = set(_UNSAFE_GLOBAL_RE.findall(str(err)))
    if found and is_zip:  # the error names only the first one; list them all
        try:
            found.update(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # noqa: BLE001  (best effort: the first name is enough for the message)
            pass
    return sorted(found)


def safe_torch_load(path: str | os.PathLike, what: str, unsafe_pickle: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` (memory-mapped when the file is a zip), with a clear error.

    A file that is not a PyTorch checkpoint (empty, truncated, text, ...) is called that. A real pickle whose objects
    ``weights_only`` refuses is named with those objects; pickles can run arbitrary code, so there is no silent
    fallback: only ``unsafe_pickle=True`` (the CLI's ``--unsafe_pickle``) retries it with ``weights_only=False``, with
    a warning.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConversionError(f"{what}: no such file {path!r}.")
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # the unpickler raises several types (UnpicklingError, RuntimeError, EOFError, ...)
        refused = _refused_globals(path, err, mmap)
        if not refused:
            size = os.path.getsize(path)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            detail = "it is empty" if size == 0 else f"{size} bytes, truncated or of another format: {reason}"
            raise ConversionError(f"{what}: {path!r} is not a PyTorch checkpoint ({detail}).") from err
        if not unsafe_pickle:
            raise ConversionError(
                f"{what}: {path!r} is a pickle that torch.load(weights_only=True) refuses: it holds "
                f"{', '.join(refused)}, which loading would construct (a pickle can run code). If you trust its "
                "source, rerun with --unsafe_pickle (unsafe_pickle=True)."
            ) from err
    warnings.warn(
        f"{what}: loading {path!r} with weights_only=False (--unsafe_pickle): this runs any code the pickle holds.",
        stacklevel=2,
    )
    return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
