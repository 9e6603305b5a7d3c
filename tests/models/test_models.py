"""GALIPGenerator / GALIPDiscriminator: official sizes, the bridge against a hand-computed reference, gradients."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F

from galip_diffusers import GALIPDiscriminator, GALIPGenerator
from galip_diffusers.models.clip_bridge import preprocess_for_clip
from galip_core.layers import generator_block_sizes, generator_channels
from galip_diffusers.testing_utils import (
    TINY_VISION_CONFIG,
    tiny_discriminator,
    tiny_generator,
    tiny_image_encoder,
)


def test_default_config_has_official_parameter_counts():
    with torch.device("meta"):
        generator = GALIPGenerator()
        discriminator = GALIPDiscriminator()
    learnable = sum(p.numel() for p in generator.learnable_parameters())
    frozen = sum(p.numel() for p in generator.vision_model.parameters())
    assert learnable == 51_830_211
    assert frozen == 87_454_464
    assert all(not p.requires_grad for p in generator.vision_model.parameters())
    assert all(p.requires_grad for p in generator.learnable_parameters())
    # NetD (28,706,821) + NetC (2,099,200) minus the two unused 768x768 shortcuts of the official checkpoint.
    assert sum(p.numel() for p in discriminator.parameters()) == 28_706_821 + 2_099_200 - 2 * (768 * 768 + 768)


def test_official_layout_channels_and_sizes():
    assert generator_channels(64, 224) == [512, 512, 512, 512, 256, 128, 64]
    assert generator_block_sizes(6, 224) == [8, 16, 32, 64, 128, 224]
    with torch.device("meta"):
        generator = GALIPGenerator()
    assert generator.grid_size == 7
    assert generator.fc_prompt.out_features == 8 * 768
    assert [b.out_size for b in generator.blocks] == [8, 16, 32, 64, 128, 224]


@pytest.mark.parametrize("output_size,expected", [(64, [8, 16, 32, 64]), (128, [8, 16, 32, 64, 128])])
def test_output_resolution_is_configurable(output_size, expected):
    generator = tiny_generator(output_size=output_size)
    assert [b.out_size for b in generator.blocks] == expected
    out = generator(torch.randn(2, 8), torch.randn(2, 16))
    assert out.shape == (2, 3, output_size, output_size)


def test_bad_config_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="prompt_layers"):
        tiny_generator(prompt_layers=[1, 7])
    with pytest.raises(ValueError, match="clip_preprocess"):
        GALIPDiscriminator(clip_preprocess="fancy")
    generator = tiny_generator()
    with pytest.raises(ValueError, match="`z` must have shape"):
        generator(torch.randn(2, 5), torch.randn(2, 16))
    with pytest.raises(ValueError, match="`text_embeds` must have shape"):
        generator(torch.randn(2, 8), torch.randn(2, 15))
    with pytest.raises(ValueError, match="`upto` must be an int in \\[0, 3\\]"):
        generator.forward_features(torch.randn(1, 8), torch.randn(1, 16), upto=4)


def _layer_norm(x, ln):
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def _reference_block(x, layer, num_heads):
    """One CLIP encoder block written out by hand: pre-LN attention + pre-LN quick-GELU MLP."""
    attn = layer.self_attn
    h = _layer_norm(x, layer.layer_norm1)
    b, n, c = h.shape
    d = c // num_heads
    q = (h @ attn.q_proj.weight.T + attn.q_proj.bias).view(b, n, num_heads, d).transpose(1, 2)
    k = (h @ attn.k_proj.weight.T + attn.k_proj.bias).view(b, n, num_heads, d).transpose(1, 2)
    v = (h @ attn.v_proj.weight.T + attn.v_proj.bias).view(b, n, num_heads, d).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
    a = (weights @ v).transpose(1, 2).reshape(b, n, c)
    x = x + a @ attn.out_proj.weight.T + attn.out_proj.bias
    h = _layer_norm(x, layer.layer_norm2)
    h = h @ layer.mlp.fc1.weight.T + layer.mlp.fc1.bias
    h = h * torch.sigmoid(1.702 * h)
    return x + h @ layer.mlp.fc2.weight.T + layer.mlp.fc2.bias


def test_bridge_matches_hand_computed_reference():
    generator = tiny_generator(seed=3)
    bridge = generator.vision_model
    torch.manual_seed(0)
    feature = torch.randn(2, 32, 5, 5)
    prompts = torch.randn(2, 2, 32)
    prompt_layers = [1, 2]

    tokens = feature.flatten(2).transpose(1, 2)
    cls = bridge.embeddings.class_embedding.expand(2, 1, -1)
    x = torch.cat([cls, tokens], 1) + bridge.embeddings.position_embedding.weight
    x = _layer_norm(x, bridge.pre_layrnorm)
    for i, layer in enumerate(bridge.encoder.layers):
        if i in prompt_layers:
            x = _reference_block(torch.cat([x, prompts[:, prompt_layers.index(i)][:, None]], 1), layer, 4)[:, :-1]
        else:
            x = _reference_block(x, layer, 4)
    expected = x[:, 1:].transpose(1, 2).reshape(2, 32, 5, 5)

    got = bridge(feature, prompts, prompt_layers)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The prompts matter: dropping them changes the output.
    assert (bridge(feature, prompts, []) - expected).abs().max() > 1e-3


def test_generator_forward_matches_official_data_flow():
    """Recompute G from its submodules following the official NetG step by step: fc_code, M-blocks, conv_fuse, the prompted ViT,
    conv on fuse + 0.1 * ViT output, G-blocks, LeakyReLU + conv to RGB (noise first in the condition)."""
    generator = tiny_generator(seed=1)
    z, s = torch.randn(3, 8), torch.randn(3, 16)
    cond = torch.cat([z, s], 1)
    h = generator.fc_code(z).view(3, 8, 5, 5)
    for block in generator.mapping_blocks:
        h = block(h, cond)
    fuse = generator.conv_fuse(h)
    prompts = generator.fc_prompt(cond).view(3, 2, 32)
    h = generator.conv_bridge_out(fuse + 0.1 * generator.vision_model(fuse, prompts, [1, 2]))
    for block, size in zip(generator.blocks, [8, 16, 32]):
        assert block.out_size == size
        h = block(h, cond)
    expected = generator.conv_out(F.leaky_relu(h, 0.2))
    torch.testing.assert_close(generator(z, s), expected)
    # Swapping noise and text in the condition must matter.
    assert not torch.allclose(generator.condition(z, s)[:, :8], s[:, :8])


@pytest.mark.parametrize("split", [0, 1, 2, 3])
def test_forward_features_and_forward_from_compose_to_forward(split):
    generator = tiny_generator()
    z, s = torch.randn(2, 8), torch.randn(2, 16)
    h = generator.forward_features(z, s, upto=split)
    torch.testing.assert_close(generator.forward_from(h, z, s, start=split), generator(z, s))


def test_gradients_reach_learnable_parameters_through_the_frozen_vit():
    generator = tiny_generator()
    generator.train()
    out = generator(torch.randn(2, 8), torch.randn(2, 16))
    out.square().mean().backward()
    for name, param in generator.named_parameters():
        if name.startswith("vision_model."):
            assert param.grad is None, name
    # fc_prompt only influences the output through the ViT: a non-zero gradient proves the ViT is differentiable.
    assert generator.fc_prompt.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in generator.learnable_parameters())


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    z, s = torch.randn(2, 8), torch.randn(2, 16)
    grads = []
    for checkpointing in (False, True):
        generator = tiny_generator()
        generator.train()
        if checkpointing:
            generator.enable_gradient_checkpointing()
        generator(z, s).sum().backward()
        grads.append(generator.blocks[0].conv1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_discriminator_features_logits_and_preprocessing():
    discriminator = tiny_discriminator()
    encoder = tiny_image_encoder()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    feats, embeds = discriminator.extract_features(encoder, images)
    assert feats.shape == (2, 3, 32, 5, 5) and embeds.shape == (2, 16)
    # Features are the encoder's hidden states after blocks 0, 1, 2 (CLS dropped), with the official preprocessing.
    pixels = preprocess_for_clip(images, 40, "official")
    hidden = encoder(pixel_values=pixels, output_hidden_states=True).hidden_states
    torch.testing.assert_close(feats[:, 1], hidden[2][:, 1:].transpose(1, 2).reshape(2, 32, 5, 5))
    logits = discriminator(feats, torch.randn(2, 16))
    assert logits.shape == (2,)
    with pytest.raises(ValueError, match="clip_features"):
        discriminator(feats[:, :2], torch.randn(2, 16))


def test_official_preprocessing_maps_twice():
    images = torch.full((1, 3, 8, 8), -1.0)
    official = preprocess_for_clip(images, 8, "official")
    standard = preprocess_for_clip(images, 8, "standard")
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    # A black image is seen as 0.5 by the official code, as 0 by standard CLIP preprocessing.
    torch.testing.assert_close(official[0, :, 0, 0], (0.5 - mean) / std)
    torch.testing.assert_close(standard[0, :, 0, 0], (0.0 - mean) / std)


def test_generator_save_load_roundtrip(tmp_path):
    generator = tiny_generator(seed=5)
    generator.save_pretrained(tmp_path / "generator")
    assert (tmp_path / "generator" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = GALIPGenerator.from_pretrained(tmp_path, subfolder="generator")
    assert loaded.config.vision_config == TINY_VISION_CONFIG | {"num_channels": 3}
    assert all(not p.requires_grad for p in loaded.vision_model.parameters())
    z, s = torch.randn(2, 8), torch.randn(2, 16)
    assert torch.equal(loaded(z, s), generator(z, s))


def test_discriminator_can_tap_the_patch_embeddings():
    """feature_layers=-1 is the embedding layer's output (the input of block 0): the most pixel-like CLIP feature."""
    from galip_core.vit import tokens_to_grid
    from galip_diffusers.models.clip_bridge import extract_clip_features

    encoder = tiny_image_encoder()
    images = torch.rand(2, 3, 40, 40) * 2 - 1
    feats, _ = extract_clip_features(encoder, images, [-1, 1], "standard")
    pixels = preprocess_for_clip(images, 40, "standard")
    hidden = encoder(pixel_values=pixels, output_hidden_states=True).hidden_states
    torch.testing.assert_close(feats[:, 0], tokens_to_grid(hidden[0][:, 1:]))
    torch.testing.assert_close(feats[:, 1], tokens_to_grid(hidden[2][:, 1:]))
    assert tiny_discriminator(feature_layers=[-1, 0, 2]).config.feature_layers == [-1, 0, 2]
    with pytest.raises(ValueError, match="`feature_layers` must be ViT block indices >= 0, or -1"):
        tiny_discriminator(feature_layers=[-2, 1])


def test_casting_our_models_gives_no_wrong_keep_in_float32_warning():
    """diffusers 0.42 warned "There are modules in GALIPGenerator that should be kept in float32: []" on every
    ``pipe.to(dtype)``; our models keep nothing in float32. Another model's warning still passes through."""
    from diffusers import AutoencoderKL

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("diffusers.models.modeling_utils")
    logger.addHandler(handler)
    try:
        tiny_generator().to(torch.float16)
        tiny_discriminator().to(dtype=torch.bfloat16)
        assert not [m for m in records if "kept in float32" in m]
        AutoencoderKL(block_out_channels=(32,), norm_num_groups=32).to(torch.float16)
        assert [m for m in records if m.startswith("There are modules in AutoencoderKL")]
    finally:
        logger.removeHandler(handler)
