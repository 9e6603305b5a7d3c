from galip_diffusers.models.discriminator import GALIPDiscriminator
from galip_diffusers.models.generator import GALIPGenerator
from galip_diffusers.utils import quiet_empty_float32_warning

quiet_empty_float32_warning()  # a wrong diffusers 0.42 warning on every pipe.to(dtype): see its docstring

__all__ = ["GALIPDiscriminator", "GALIPGenerator"]
