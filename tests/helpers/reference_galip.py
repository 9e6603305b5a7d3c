"""An independent reference of the official GALIP forward passes, written only from the published
facts of the official code (tobran/GALIP ``code/``), restated where they are used below.

Pure ``torch.nn.functional`` code on official state-dict tensors (official key names: ``fc_code.weight``,
``mapping.CLIP_ViT.transformer.resblocks.0.attn.in_proj_weight``, ``DBlocks.0.conv_r.0.weight``, ...). It does not
import galip_diffusers, so the converter's key tables and the package's modules are checked against it, not with it.
Sizes are read from the tensors, so the same code runs the official configuration and tiny ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------------------------- shapes (the official NetG/NetD/NetC)
def vit_shapes(width: int, layers: int, patch: int, grid: int, prefix: str = "") -> dict[str, tuple]:
    """OpenAI ViT tensors without ``ln_post``/``proj`` (what ``mapping.CLIP_ViT`` holds)."""
    shapes = {
        f"{prefix}class_embedding": (width,),
        f"{prefix}positional_embedding": (grid * grid + 1, width),
        f"{prefix}conv1.weight": (width, 3, patch, patch),
        f"{prefix}ln_pre.weight": (width,),
        f"{prefix}ln_pre.bias": (width,),
    }
    for i in range(layers):
        shapes.update(resblock_shapes(width, f"{prefix}transformer.resblocks.{i}."))
    return shapes


def resblock_shapes(width: int, p: str) -> dict[str, tuple]:
    return {
        f"{p}attn.in_proj_weight": (3 * width, width), f"{p}attn.in_proj_bias": (3 * width,),
        f"{p}attn.out_proj.weight": (width, width), f"{p}attn.out_proj.bias": (width,),
        f"{p}ln_1.weight": (width,), f"{p}ln_1.bias": (width,),
        f"{p}mlp.c_fc.weight": (4 * width, width), f"{p}mlp.c_fc.bias": (4 * width,),
        f"{p}mlp.c_proj.weight": (width, 4 * width), f"{p}mlp.c_proj.bias": (width,),
        f"{p}ln_2.weight": (width,), f"{p}ln_2.bias": (width,),
    }  # fmt: skip


def _dfblk_shapes(p: str, cond: int, channels: int) -> dict[str, tuple]:
    shapes = {}
    for affine in ("affine0", "affine1"):
        for branch in ("fc_gamma", "fc_beta"):
            q = f"{p}.{affine}.{branch}"
            shapes.update({f"{q}.linear1.weight": (channels, cond), f"{q}.linear1.bias": (channels,),
                           f"{q}.linear2.weight": (channels, channels), f"{q}.linear2.bias": (channels,)})  # fmt: skip
    return shapes


def _conv(p: str, c_out: int, c_in: int, k: int, bias: bool = True) -> dict[str, tuple]:
    return {f"{p}.weight": (c_out, c_in, k, k), **({f"{p}.bias": (c_out,)} if bias else {})}


def official_netg_shapes(
    z_dim=100, cond_dim=512, ngf=64, imsize=256, code_ch=64, mid=32, n_mapping=4, width=768, layers=12, patch=32,
    grid=7, n_prompts=8,
) -> dict[str, tuple]:
    """NetG's keys and shapes, as the official code builds them (the defaults are the released configuration)."""
    cond = z_dim + cond_dim
    shapes = {"fc_code.weight": (grid * grid * code_ch, z_dim), "fc_code.bias": (grid * grid * code_ch,)}
    for i in range(n_mapping):
        p = f"mapping.FBlocks.{i}"
        shapes.update(_conv(f"{p}.conv1", mid, code_ch, 3))
        shapes.update(_dfblk_shapes(f"{p}.fuse1", cond, mid))
        shapes.update(_conv(f"{p}.conv2", code_ch, mid, 3))
        shapes.update(_dfblk_shapes(f"{p}.fuse2", cond, code_ch))
    shapes.update(_conv("mapping.conv_fuse", width, code_ch, 5))
    shapes.update(vit_shapes(width, layers, patch, grid, "mapping.CLIP_ViT."))
    channels = [ngf * min(2**i, 8) for i in range(int(math.log2(imsize)) - 1)][::-1]
    shapes.update(_conv("mapping.conv", channels[0], width, 5))
    shapes.update({"mapping.fc_prompt.weight": (n_prompts * width, cond), "mapping.fc_prompt.bias": (n_prompts * width,)})
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        p = f"GBlocks.{i}"
        shapes.update({**_conv(f"{p}.c1", c_out, c_in, 3), **_conv(f"{p}.c2", c_out, c_out, 3)})
        shapes.update({**_dfblk_shapes(f"{p}.fuse1", cond, c_in), **_dfblk_shapes(f"{p}.fuse2", cond, c_out)})
        if c_in != c_out:
            shapes.update(_conv(f"{p}.c_sc", c_out, c_in, 1))
    shapes.update(_conv("to_rgb.1", 3, channels[-1], 3))
    return shapes


def official_netd_shapes(width=768, out=512, n_blocks=2) -> dict[str, tuple]:
    """NetD: every D_Block stores ``conv_s`` (even 768 -> 768, where the forward does not use it)."""
    shapes = {}
    for p, c_in, c_out, beta in [(f"DBlocks.{i}", width, width, True) for i in range(n_blocks)] + [("main", width, out, False)]:
        shapes[f"{p}.gamma"] = (1,)
        if beta:
            shapes[f"{p}.beta"] = (1,)
        shapes.update({**_conv(f"{p}.conv_r.0", c_out, c_in, 3, False), **_conv(f"{p}.conv_r.2", c_out, c_out, 3, False)})
        shapes.update(_conv(f"{p}.conv_s", c_out, c_in, 1))
    return shapes


def official_netc_shapes(out=512, cond_dim=512, hidden=128, k=4) -> dict[str, tuple]:
    return {"joint_conv.0.weight": (hidden, out + cond_dim, k, k), "joint_conv.2.weight": (1, hidden, 4, 4)}


def random_tensors(shapes: dict[str, tuple], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random values with sane scales. The zero/identity initialisations of the official code (Affine ``linear2``,
    D's ``gamma``/``beta``, LayerNorms) are replaced by random values so that every tensor matters."""
    out = {}
    for name, shape in shapes.items():
        x = torch.randn(shape, generator=generator)
        if name.endswith(("gamma", "beta")) and shape == (1,):
            x = 0.5 + 0.2 * x
        elif "fc_gamma.linear2.bias" in name:
            x = 1.0 + 0.2 * x
        elif ".ln_" in name or name.startswith("ln_"):
            x = (1.0 + 0.1 * x) if name.endswith("weight") else 0.1 * x
        elif name.endswith("class_embedding") or name.endswith("positional_embedding"):
            x = 0.1 * x
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            x = x * (0.5 if "linear2" in name else 1.0) / math.sqrt(fan_in)
        else:
            x = 0.05 * x
        out[name] = x
    return out


# ---------------------------------------------------------------------------------------------------- forward passes
def _sub(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _count(state: dict[str, torch.Tensor], prefix: str, suffix: str) -> int:
    return sum(1 for k in state if k.startswith(prefix) and k.endswith(suffix))


def layer_norm(x, state, p):
    return F.layer_norm(x, x.shape[-1:], state[f"{p}.weight"], state[f"{p}.bias"], eps=1e-5)


def residual_attention_block(x, state, p, heads, causal=False):
    """OpenAI CLIP block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``, QuickGELU MLP."""
    batch, n, width = x.shape
    h = layer_norm(x, state, f"{p}.ln_1")
    q, k, v = F.linear(h, state[f"{p}.attn.in_proj_weight"], state[f"{p}.attn.in_proj_bias"]).split(width, dim=-1)
    q, k, v = (t.reshape(batch, n, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(width // heads)
    if causal:
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, n, width)
    x = x + F.linear(attn, state[f"{p}.attn.out_proj.weight"], state[f"{p}.attn.out_proj.bias"])
    h = F.linear(layer_norm(x, state, f"{p}.ln_2"), state[f"{p}.mlp.c_fc.weight"], state[f"{p}.mlp.c_fc.bias"])
    h = h * torch.sigmoid(1.702 * h)
    return x + F.linear(h, state[f"{p}.mlp.c_proj.weight"], state[f"{p}.mlp.c_proj.bias"])


def _vit_input(tokens, vit):
    cls = vit["class_embedding"].expand(tokens.shape[0], 1, -1)
    x = torch.cat([cls, tokens], dim=1) + vit["positional_embedding"]
    return layer_norm(x, vit, "ln_pre")


def _to_grid(tokens):
    batch, n, width = tokens.shape
    g = int(round(n**0.5))
    return tokens.transpose(1, 2).reshape(batch, width, g, g)


def _affine(x, cond, state, p):
    gamma = F.linear(F.relu(F.linear(cond, state[f"{p}.fc_gamma.linear1.weight"], state[f"{p}.fc_gamma.linear1.bias"])),
                     state[f"{p}.fc_gamma.linear2.weight"], state[f"{p}.fc_gamma.linear2.bias"])
    beta = F.linear(F.relu(F.linear(cond, state[f"{p}.fc_beta.linear1.weight"], state[f"{p}.fc_beta.linear1.bias"])),
                    state[f"{p}.fc_beta.linear2.weight"], state[f"{p}.fc_beta.linear2.bias"])  # fmt: skip
    return gamma[:, :, None, None] * x + beta[:, :, None, None]


def _dfblk(x, cond, state, p):
    x = F.leaky_relu(_affine(x, cond, state, f"{p}.affine0"), 0.2)
    return F.leaky_relu(_affine(x, cond, state, f"{p}.affine1"), 0.2)


def _conv2d(x, state, p, padding):
    return F.conv2d(x, state[f"{p}.weight"], state.get(f"{p}.bias"), padding=padding)


def netg_forward(G, z, sent, vision_heads=12, output_size=224, bridge_scale=0.1):
    """NetG(z, sent) -> raw image (no tanh). ``G`` has official names (no ``module.`` prefix)."""
    batch = z.shape[0]
    cond = torch.cat([z, sent], dim=1)  # noise first
    code_ch = G["mapping.FBlocks.0.conv1.weight"].shape[1]
    grid = int(round((G["fc_code.weight"].shape[0] / code_ch) ** 0.5))
    h = F.linear(z, G["fc_code.weight"], G["fc_code.bias"]).view(batch, code_ch, grid, grid)
    for i in range(_count(G, "mapping.FBlocks.", ".conv1.weight")):
        p = f"mapping.FBlocks.{i}"
        r = _dfblk(_conv2d(h, G, f"{p}.conv1", 1), cond, G, f"{p}.fuse1")
        r = _dfblk(_conv2d(r, G, f"{p}.conv2", 1), cond, G, f"{p}.fuse2")
        h = (_conv2d(h, G, f"{p}.c_sc", 0) if f"{p}.c_sc.weight" in G else h) + r
    fuse_feat = _conv2d(h, G, "mapping.conv_fuse", 2)
    width = fuse_feat.shape[1]
    prompts = F.linear(cond, G["mapping.fc_prompt.weight"], G["mapping.fc_prompt.bias"]).view(batch, -1, width)
    vit = _sub(G, "mapping.CLIP_ViT.")
    x = _vit_input(fuse_feat.flatten(2).transpose(1, 2), vit)
    for i in range(_count(vit, "transformer.resblocks.", ".attn.in_proj_weight")):
        p = f"transformer.resblocks.{i}"
        if 1 <= i <= prompts.shape[1]:  # prompt token i-1 appended at the end, then dropped
            x = residual_attention_block(torch.cat([x, prompts[:, i - 1 : i]], dim=1), vit, p, vision_heads)[:, :-1]
        else:
            x = residual_attention_block(x, vit, p, vision_heads)
    map_feat = _to_grid(x[:, 1:])
    h = _conv2d(fuse_feat + bridge_scale * map_feat, G, "mapping.conv", 2)
    n_blocks = _count(G, "GBlocks.", ".c1.weight")
    sizes = [2 ** (3 + i) for i in range(n_blocks - 1)] + [output_size]
    for i, size in enumerate(sizes):
        p = f"GBlocks.{i}"
        h = F.interpolate(h, size=(size, size))  # nearest
        r = _conv2d(_dfblk(h, cond, G, f"{p}.fuse1"), G, f"{p}.c1", 1)
        r = _conv2d(_dfblk(r, cond, G, f"{p}.fuse2"), G, f"{p}.c2", 1)
        h = (_conv2d(h, G, f"{p}.c_sc", 0) if f"{p}.c_sc.weight" in G else h) + r
    return _conv2d(F.leaky_relu(h, 0.2), G, "to_rgb.1", 1)


def official_clip_preprocess(images, image_size):
    """Images in [-1, 1] -> CLIP input, as the official code does it (two shifts, nearest resize)."""
    x = F.interpolate(images * 0.5 + 0.5, size=(image_size, image_size))
    x = (x + 1) * 0.5
    mean = torch.tensor(CLIP_MEAN, dtype=images.dtype)[None, :, None, None]  # in float64 too: exact comparisons
    std = torch.tensor(CLIP_STD, dtype=images.dtype)[None, :, None, None]
    return (x - mean) / std


def clip_image_features(vit, pixel_values, layers=(1, 4, 8), heads=12):
    """OpenAI ViT on pixels: the token grids after ``layers`` (CLS dropped) stacked to (B, L, C, g, g), and the image
    embedding ``ln_post(CLS) @ proj``. ``vit`` has OpenAI ``visual.*`` names without the prefix."""
    patch = vit["conv1.weight"].shape[-1]
    x = F.conv2d(pixel_values, vit["conv1.weight"], stride=patch)
    x = _vit_input(x.flatten(2).transpose(1, 2), vit)
    taps = []
    for i in range(_count(vit, "transformer.resblocks.", ".attn.in_proj_weight")):
        x = residual_attention_block(x, vit, f"transformer.resblocks.{i}", heads)
        if i in layers:
            taps.append(_to_grid(x[:, 1:]))
    embeds = layer_norm(x[:, 0], vit, "ln_post") @ vit["proj"]
    return torch.stack(taps, dim=1), embeds


def _dblock(x, D, p, clip_feat=None):
    res = F.leaky_relu(F.conv2d(x, D[f"{p}.conv_r.0.weight"], padding=1), 0.2)
    res = F.leaky_relu(F.conv2d(res, D[f"{p}.conv_r.2.weight"], padding=1), 0.2)
    shortcut = _conv2d(x, D, f"{p}.conv_s", 0) if x.shape[1] != res.shape[1] else x
    out = shortcut + D[f"{p}.gamma"] * res
    return out if clip_feat is None else out + D[f"{p}.beta"] * clip_feat


def netd_forward(D, feats):
    out = feats[:, 0]
    for i in range(_count(D, "DBlocks.", ".conv_r.0.weight")):
        out = _dblock(out, D, f"DBlocks.{i}", feats[:, i + 1])
    return _dblock(out, D, "main")


def netc_forward(C, features, sent):
    tiled = sent[:, :, None, None].expand(-1, -1, *features.shape[-2:])
    h = F.leaky_relu(F.conv2d(torch.cat([features, tiled], dim=1), C["joint_conv.0.weight"]), 0.2)
    return F.conv2d(h, C["joint_conv.2.weight"]).flatten()


def clip_text_embeds(T, tokens, heads=8):
    """OpenAI CLIP text tower: EOT (the highest id) state after ``ln_final``, times ``text_projection``."""
    x = T["token_embedding.weight"][tokens] + T["positional_embedding"]
    for i in range(_count(T, "transformer.resblocks.", ".attn.in_proj_weight")):
        x = residual_attention_block(x, T, f"transformer.resblocks.{i}", heads, causal=True)
    x = layer_norm(x, T, "ln_final")
    return x[torch.arange(tokens.shape[0]), tokens.argmax(-1)] @ T["text_projection"]
