from .discriminator import GALIPDiscriminator
from .generator import GALIPGenerator

__all__ = ["GALIPDiscriminator", "GALIPGenerator"]
