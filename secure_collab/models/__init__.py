"""Hugging Face model adapters: loading (embedded SmolLM2, tiny test models, any HF causal LM) and arch specs."""

from secure_collab.models.loading import LoadedModel, load_model, resolve_device
from secure_collab.models.specs import ArchSpec, add_to_down_weight, down_weight, spec_for

__all__ = ["ArchSpec", "LoadedModel", "add_to_down_weight", "down_weight", "load_model", "resolve_device",
           "spec_for"]
