from .pipeline_galip import GALIPPipeline

__all__ = ["GALIPPipeline"]
