"""Official-format inputs for the converter tests: random GALIP checkpoints and OpenAI-format CLIP models.

The CLIP models are the ``clip`` package's own ``clip.model.CLIP`` (random weights). ``clip/model.py`` and
``clip/simple_tokenizer.py`` are loaded by file path: the package's ``__init__`` imports torchvision, which is not
installed (and must not be).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from helpers import reference_galip as ref


def clip_package_dir() -> str | None:
    spec = importlib.util.find_spec("clip")
    return spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None


def load_clip_module(name: str):
    """``clip/<name>.py`` as a standalone module (without running ``clip/__init__.py``)."""
    path = os.path.join(clip_package_dir(), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_openai_clip_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Sizes:
    """One configuration in every naming: ``clip.model.CLIP`` kwargs, the reference shape builders' kwargs, and the
    converter's ``clip_geometry`` / ``generator_config`` / ``discriminator_config``."""

    clip: dict[str, Any]
    netg: dict[str, Any] = field(default_factory=dict)
    netd: dict[str, Any] = field(default_factory=dict)
    netc: dict[str, Any] = field(default_factory=dict)
    geometry: dict[str, Any] = field(default_factory=dict)
    generator_config: dict[str, Any] | None = None
    discriminator_config: dict[str, Any] | None = None
    output_size: int = 224
    feature_layers: tuple[int, ...] = (1, 4, 8)

    @property
    def vision_heads(self) -> int:
        return self.clip["vision_width"] // 64  # clip.model's rule

    @property
    def text_heads(self) -> int:
        return self.clip["transformer_heads"]


FULL = Sizes(
    clip=dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
              context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12),
)  # fmt: skip
TINY = Sizes(
    clip=dict(embed_dim=16, image_resolution=40, vision_layers=3, vision_width=128, vision_patch_size=8,
              context_length=77, vocab_size=49408, transformer_width=32, transformer_heads=4, transformer_layers=2),
    netg=dict(z_dim=8, cond_dim=16, ngf=4, imsize=32, code_ch=8, mid=4, n_mapping=2, width=128, layers=3, patch=8,
              grid=5, n_prompts=2),
    netd=dict(width=128, out=24, n_blocks=2),
    netc=dict(out=24, cond_dim=16, hidden=8, k=2),
    geometry=dict(embed_dim=16, image_size=40, patch_size=8, vision_width=128, vision_layers=3, vision_heads=2,
                  text_width=32, text_layers=2, text_heads=4),
    generator_config=dict(z_dim=8, cond_dim=16, ngf=4, output_size=32, code_channels=8, mapping_mid_channels=4,
                          num_mapping_blocks=2, prompt_layers=[1, 2]),
    discriminator_config=dict(hidden_size=128, out_channels=24, cond_dim=16, head_channels=8, grid_size=5,
                              feature_layers=[0, 1, 2]),
    output_size=32,
    feature_layers=(0, 1, 2),
)  # fmt: skip


def make_openai_clip(sizes: Sizes, seed: int = 0) -> torch.nn.Module:
    """``clip.model.CLIP`` with random weights (fp32); LayerNorms perturbed so that they are not the identity."""
    clip_model = load_clip_module("model")
    torch.manual_seed(seed)
    model = clip_model.CLIP(**sizes.clip).float().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".ln_" in name or name.startswith(("ln_", "visual.ln_")):
                param.add_(0.1 * torch.randn_like(param))
    return model


def make_official_nets(clip_model: torch.nn.Module, sizes: Sizes, seed: int = 0, netg_shapes=None) -> dict:
    """``{'netG', 'netD', 'netC'}`` state dicts (official names, random values); NetG's ``mapping.CLIP_ViT`` is the
    CLIP model's visual tower without ``ln_post``/``proj``, as in the released checkpoints."""
    generator = torch.Generator().manual_seed(seed)
    shapes = netg_shapes if netg_shapes is not None else ref.official_netg_shapes(**sizes.netg)
    vit_keys = [k for k in shapes if k.startswith("mapping.CLIP_ViT.")]
    netg = ref.random_tensors({k: v for k, v in shapes.items() if k not in vit_keys}, generator)
    visual = clip_model.visual.state_dict()
    for key in vit_keys:
        netg[key] = visual[key[len("mapping.CLIP_ViT.") :]].clone()
    assert {k: tuple(v.shape) for k, v in netg.items()} == {k: tuple(v) for k, v in shapes.items()}
    netd = ref.random_tensors(ref.official_netd_shapes(**sizes.netd), generator)
    netc = ref.random_tensors(ref.official_netc_shapes(**sizes.netc), generator)
    return {"netG": netg, "netD": netd, "netC": netc}


def official_checkpoint(nets: dict, ddp: bool = True) -> dict:
    """The official ``torch.save`` layout (with the DDP ``module.`` prefix when ``ddp``) and a small Adam state."""
    prefix = "module." if ddp else ""
    adam = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4), "exp_avg_sq": torch.zeros(4)}},
            "param_groups": [{"lr": 1e-4, "betas": (0.0, 0.9), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
                              "params": [0]}]}  # fmt: skip
    return {
        "model": {name: {prefix + k: v for k, v in state.items()} for name, state in nets.items()},
        "optimizers": {"optimizer_G": adam, "optimizer_D": adam},
        "epoch": 3,
    }


def read_shapes_tsv(path: str) -> dict[str, dict[str, tuple]]:
    """``reference/*.tsv`` rows (``[net\\t]key\\tshape``) -> {net: {key: shape}} (net defaults to ``netG``)."""
    out: dict[str, dict[str, tuple]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 2:
                continue
            net, key, shape = (cols if len(cols) == 3 else ["netG", *cols])
            out.setdefault(net, {})[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


def clip_tokenize(tokenizer, texts: list[str], context_length: int = 77) -> torch.Tensor:
    """``clip.tokenize(texts, context_length, truncate=True)``, written out with the package's SimpleTokenizer
    (``clip/clip.py`` imports torchvision, so it cannot be imported here)."""
    sot, eot = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        tokens = [sot] + tokenizer.encode(text) + [eot]
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            tokens[-1] = eot
        result[i, : len(tokens)] = torch.tensor(tokens)
    return result
