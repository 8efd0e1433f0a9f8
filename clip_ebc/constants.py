"""File names and fixed strings shared by the loading layers. Imports nothing.

A clip-ebc checkpoint is a folder (or Hub repository) holding :data:`CONFIG_NAME` and
:data:`WEIGHTS_NAME`; a converted release in the cache also holds :data:`CHECKSUMS_NAME`.
"""

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME)
CHECKSUMS_NAME = "checksums.json"
HF_PREFIX = "hf-hub:"
"""Prefix of a Hugging Face Hub model id (``hf-hub:ORG/NAME[@REVISION]``), as open_clip writes them."""
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
"""Suffixes of official checkpoint files (PyTorch pickles or safetensors)."""
