"""A hand-made vision projector (``--mmproj``) for the scripted model.

It is a LLaVA-style ``clip`` GGUF (projector type ``mlp``) that llama.cpp's ``mtmd``
loads like a real one: it decodes and resizes the image, embeds 4 patches and runs the
two-layer MLP projector. The ViT has one block that the llava graph never runs (it stops
at the second-to-last block), and the projector's first layer is all zeros, so every
image becomes ``PATCHES`` identical embeddings equal to the second layer's bias: the
scripted model's ``CONST + MISC`` features, i.e. tokens that change nothing. Requests
with images therefore succeed and answer exactly as without them.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from tests.peers.llamacpp.model import image_embedding

IMAGE_SIZE = 28
PATCH_SIZE = 14
PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2
VIT_WIDTH = 8


def write_projector(path: Path | str) -> None:
    """Write the projector for the model that ``model.write_model`` writes."""
    target = image_embedding()
    width, hidden = VIT_WIDTH, VIT_WIDTH
    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("lookout scripted projector")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    writer.add_uint32("clip.vision.embedding_length", width)
    writer.add_uint32("clip.vision.feed_forward_length", width)
    writer.add_uint32("clip.vision.block_count", 1)
    writer.add_uint32("clip.vision.projection_dim", target.size)
    writer.add_uint32("clip.vision.attention.head_count", 1)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    f32 = np.float32
    tensors = {
        "v.patch_embd.weight": np.zeros((width, 3, PATCH_SIZE, PATCH_SIZE), f32),
        "v.position_embd.weight": np.zeros((PATCHES, width), f32),
        # one block, required by the loader but never evaluated (see the module docstring)
        "v.blk.0.attn_q.weight": np.zeros((width, width), f32),
        "v.blk.0.attn_k.weight": np.zeros((width, width), f32),
        "v.blk.0.attn_v.weight": np.zeros((width, width), f32),
        "v.blk.0.attn_out.weight": np.zeros((width, width), f32),
        "v.blk.0.ln1.weight": np.ones(width, f32),
        "v.blk.0.ln1.bias": np.zeros(width, f32),
        "v.blk.0.ln2.weight": np.ones(width, f32),
        "v.blk.0.ln2.bias": np.zeros(width, f32),
        "v.blk.0.ffn_up.weight": np.zeros((hidden, width), f32),
        "v.blk.0.ffn_down.weight": np.zeros((width, hidden), f32),
        "mm.0.weight": np.zeros((hidden, width), f32),
        "mm.0.bias": np.zeros(hidden, f32),
        "mm.2.weight": np.zeros((target.size, hidden), f32),
        "mm.2.bias": target.astype(f32),
    }
    for name, tensor in tensors.items():
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
