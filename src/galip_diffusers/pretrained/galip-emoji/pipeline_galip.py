"""Loads GALIP pipelines through diffusers' custom-pipeline mechanism."""
from galip_diffusers import GALIPPipeline  # noqa: F401
