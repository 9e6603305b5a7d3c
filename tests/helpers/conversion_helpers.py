"""What the conversion tests share besides their fixtures (``tests/conversion/conftest.py``): the tiny geometry the
converter is called with, and a transformers CLIPModel folder made from a tiny OpenAI-format CLIP."""

from __future__ import annotations

from transformers import CLIPConfig, CLIPModel

from galip_diffusers.conversion.openai_clip import CLIPGeometry, image_encoder_from_openai, text_encoder_from_openai
from helpers import official_fixtures as fx

TINY_GEOMETRY = CLIPGeometry(**fx.TINY.geometry)
#: what ``convert_official_checkpoint`` needs besides its paths to convert the tiny fixtures (not ViT-B/32's sizes)
TINY_KWARGS = dict(clip_geometry=TINY_GEOMETRY, generator_config=fx.TINY.generator_config,
                   discriminator_config=fx.TINY.discriminator_config)  # fmt: skip


def transformers_clip_folder(clip_model, path) -> str:
    """A transformers CLIPModel folder holding ``clip_model``'s weights (an OpenAI-format tiny CLIP)."""
    state = clip_model.state_dict()
    text = text_encoder_from_openai(state, TINY_GEOMETRY)
    vision = image_encoder_from_openai({k[7:]: v for k, v in state.items() if k.startswith("visual.")}, TINY_GEOMETRY)
    config = CLIPConfig(text_config=text.config.to_dict(), vision_config=vision.config.to_dict(), projection_dim=16)
    model = CLIPModel(config)
    model.text_model.load_state_dict(text.text_model.state_dict())
    model.text_projection.load_state_dict(text.text_projection.state_dict())
    model.vision_model.load_state_dict(vision.vision_model.state_dict())
    model.visual_projection.load_state_dict(vision.visual_projection.state_dict())
    model.save_pretrained(path)
    return str(path)
