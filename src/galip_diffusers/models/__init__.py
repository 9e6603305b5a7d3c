from galip_diffusers.models.discriminator import GALIPDiscriminator
from galip_diffusers.models.generator import GALIPGenerator

__all__ = ["GALIPDiscriminator", "GALIPGenerator"]
