#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The oracle of tests/core/model/siglip_test.cpp and resampler_test.cpp: MiniCPM-o-2.6's vision
tower (`vpm`, SigLIP NaViT) and resampler, written from the spec (minicpm-o-2_6.md sections 3 and
4) the way the Hugging Face remote code computes them (modeling_navit_siglip.py, resampler.py and
MiniCPMO.get_vllm_embedding), on Debian's PyTorch (python3-torch) in float32 on the CPU.

    vision_reference.py MODE IN.safetensors OUT.safetensors

IN holds the weights under `vpm.` / `resampler.`, the inputs under `input.`, and a JSON `config`
in its metadata; OUT receives the tensor `output`. Modes:
  siglip        input.pixel_values.{i} [3, p, L_i*p], input.tgt_sizes [N, 2] -> [N, Lmax, hidden]
  position_ids  input.tgt_sizes [N, 2]                    -> int64 [N, Lmax], the NaViT ids
  resampler     input.x [N, L, kv_dim], input.tgt_sizes   -> [N, query_num, embed_dim]
  pos_embed     config {embed_dim, h, w}                  -> [h*w, embed_dim], the 2D sin-cos rows

Run with /usr/bin/python3: the first python3 on PATH may be an interpreter without torch.
"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

NUMPY = {"F32": np.float32, "I64": np.int64, "I32": np.int32}
NAMES = {torch.float32: "F32", torch.int64: "I64"}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[8 + n + begin:8 + n + end], dtype=NUMPY[info["dtype"]])
        tensors[name] = torch.from_numpy(array.reshape(info["shape"]).copy())
    return tensors, metadata


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        blob = t.numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


# --- vision tower (modeling_navit_siglip.py) ---------------------------------------------------

def navit_position_ids(patch_attention_mask, tgt_sizes, num_patches_per_side):
    """SiglipVisionEmbeddings.forward's position ids, line for line. tgt_sizes is int32 as the
    processor makes it, so 1 / nb_patches_h is a float32 tensor."""
    batch_size, _, max_len = patch_attention_mask.shape
    boundaries = torch.arange(1 / num_patches_per_side, 1.0, 1 / num_patches_per_side)
    position_ids = torch.full(size=(batch_size, max_len), fill_value=0)
    for batch_idx, p_attn_mask in enumerate(patch_attention_mask):
        nb_patches_h = tgt_sizes[batch_idx][0]
        nb_patches_w = tgt_sizes[batch_idx][1]
        fractional_coords_h = torch.arange(0, 1 - 1e-6, 1 / nb_patches_h)
        fractional_coords_w = torch.arange(0, 1 - 1e-6, 1 / nb_patches_w)
        bucket_coords_h = torch.bucketize(fractional_coords_h, boundaries, right=True)
        bucket_coords_w = torch.bucketize(fractional_coords_w, boundaries, right=True)
        pos_ids = (bucket_coords_h[:, None] * num_patches_per_side + bucket_coords_w).flatten()
        position_ids[batch_idx][p_attn_mask.view(-1).cpu()] = pos_ids
    return position_ids


def patch_mask(tgt_sizes, max_len):
    mask = torch.zeros((len(tgt_sizes), 1, max_len), dtype=torch.bool)
    for i in range(len(tgt_sizes)):
        mask[i, 0, :tgt_sizes[i][0] * tgt_sizes[i][1]] = True
    return mask


def siglip(w, strips, tgt_sizes, c):
    hidden, heads, p = c["hidden_size"], c["num_attention_heads"], c["patch_size"]
    eps, side = c["layer_norm_eps"], c["image_size"] // c["patch_size"]
    head_dim = hidden // heads
    # MiniCPMO.get_vllm_embedding's batching: [3, p, L*p] -> [L*p, 3p], pad_sequence, back.
    flat = [s.flatten(end_dim=1).permute(1, 0) for s in strips]
    pixels = torch.nn.utils.rnn.pad_sequence(flat, batch_first=True, padding_value=0.0)
    batch, length, _ = pixels.shape
    pixels = pixels.permute(0, 2, 1).reshape(batch, 3, -1, length)
    max_patches = max(int(h) * int(w_) for h, w_ in tgt_sizes)
    mask = patch_mask(tgt_sizes, max_patches)

    # SiglipVisionEmbeddings: the Conv2d (kernel = stride = patch) and the bucketed positions.
    x = F.conv2d(pixels, w["vpm.embeddings.patch_embedding.weight"],
                 w["vpm.embeddings.patch_embedding.bias"], stride=p)
    x = x.flatten(2).transpose(1, 2)
    ids = navit_position_ids(mask, tgt_sizes, side)
    x = x + F.embedding(ids, w["vpm.embeddings.position_embedding.weight"])

    # SiglipVisionTransformer: no mask without padding, else _prepare_4d_attention_mask.
    flat_mask = mask.view(batch, -1)
    attention_mask = None
    if torch.any(~flat_mask):
        expanded = flat_mask[:, None, None, :].expand(batch, 1, max_patches, max_patches).to(x.dtype)
        inverted = 1.0 - expanded
        attention_mask = inverted.masked_fill(inverted.to(torch.bool), torch.finfo(x.dtype).min)

    for i in range(c["layers_used"]):
        pre = f"vpm.encoder.layers.{i}."
        residual = x
        h = F.layer_norm(x, (hidden,), w[pre + "layer_norm1.weight"], w[pre + "layer_norm1.bias"], eps)
        # SiglipAttention (eager): scores * scale + mask, softmax in float32.
        def proj(name):
            t = F.linear(h, w[pre + f"self_attn.{name}.weight"], w[pre + f"self_attn.{name}.bias"])
            return t.view(batch, -1, heads, head_dim).transpose(1, 2)
        q, k, v = proj("q_proj"), proj("k_proj"), proj("v_proj")
        scores = torch.matmul(q, k.transpose(2, 3)) * head_dim ** -0.5
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        a = torch.matmul(probs, v).transpose(1, 2).reshape(batch, -1, hidden)
        x = residual + F.linear(a, w[pre + "self_attn.out_proj.weight"], w[pre + "self_attn.out_proj.bias"])
        residual = x
        h = F.layer_norm(x, (hidden,), w[pre + "layer_norm2.weight"], w[pre + "layer_norm2.bias"], eps)
        h = F.linear(h, w[pre + "mlp.fc1.weight"], w[pre + "mlp.fc1.bias"])
        h = F.gelu(h, approximate="tanh")  # ACT2FN["gelu_pytorch_tanh"]
        x = residual + F.linear(h, w[pre + "mlp.fc2.weight"], w[pre + "mlp.fc2.bias"])
    return F.layer_norm(x, (hidden,), w["vpm.post_layernorm.weight"], w["vpm.post_layernorm.bias"], eps)


# --- resampler (resampler.py) ------------------------------------------------------------------

def get_2d_sincos_pos_embed(embed_dim, image_size):
    grid_h_size, grid_w_size = image_size[0], image_size[1]
    grid_h = np.arange(grid_h_size, dtype=np.float32)
    grid_w = np.arange(grid_w_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0)
    return get_2d_sincos_pos_embed_from_grid(embed_dim, grid)


def get_2d_sincos_pos_embed_from_grid(embed_dim, grid):
    emb_h = get_1d_sincos_pos_embed_from_grid_new(embed_dim // 2, grid[0])  # (H, W, D/2)
    emb_w = get_1d_sincos_pos_embed_from_grid_new(embed_dim // 2, grid[1])  # (H, W, D/2)
    return np.concatenate([emb_h, emb_w], axis=-1)  # (H, W, D)


def get_1d_sincos_pos_embed_from_grid_new(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float32)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000 ** omega  # (D/2,)
    out = np.einsum("hw,d->hwd", pos, omega)  # (H, W, D/2), outer product
    return np.concatenate([np.sin(out), np.cos(out)], axis=-1)  # (H, W, D)


class Resampler:
    """resampler.Resampler's forward with its torch.nn.MultiheadAttention (seq-first)."""

    def __init__(self, w, c):
        self.w, self.embed_dim = w, c["embed_dim"]
        self.max_size = [70, 70]
        self.pos_embed = torch.from_numpy(get_2d_sincos_pos_embed(self.embed_dim, self.max_size)).float()
        self.attn = torch.nn.MultiheadAttention(self.embed_dim, c["num_heads"])
        self.attn.load_state_dict({
            "in_proj_weight": w["resampler.attn.in_proj_weight"],
            "in_proj_bias": w["resampler.attn.in_proj_bias"],
            "out_proj.weight": w["resampler.attn.out_proj.weight"],
            "out_proj.bias": w["resampler.attn.out_proj.bias"]})
        self.attn.eval()

    def ln(self, name, x):
        return F.layer_norm(x, (self.embed_dim,), self.w[f"resampler.{name}.weight"],
                            self.w[f"resampler.{name}.bias"], 1e-6)

    def _adjust_pos_cache(self, tgt_sizes):
        max_h = torch.max(tgt_sizes[:, 0])
        max_w = torch.max(tgt_sizes[:, 1])
        if max_h > self.max_size[0] or max_w > self.max_size[1]:
            self.max_size = [max(max_h, self.max_size[0]), max(max_w, self.max_size[1])]
            self.pos_embed = torch.from_numpy(get_2d_sincos_pos_embed(self.embed_dim, self.max_size)).float()

    def forward(self, x, tgt_sizes):
        bs, dtype = x.shape[0], x.dtype
        patch_len = tgt_sizes[:, 0] * tgt_sizes[:, 1]
        self._adjust_pos_cache(tgt_sizes)
        max_patch_len = torch.max(patch_len)
        key_padding_mask = torch.zeros((bs, max_patch_len), dtype=torch.bool)
        pos_embed = []
        for i in range(bs):
            tgt_h, tgt_w = tgt_sizes[i]
            pos_embed.append(self.pos_embed[:tgt_h, :tgt_w, :].reshape((tgt_h * tgt_w, -1)).to(dtype))
            key_padding_mask[i, patch_len[i]:] = True
        pos_embed = torch.nn.utils.rnn.pad_sequence(pos_embed, batch_first=True, padding_value=0.0).permute(1, 0, 2)
        if "resampler.kv_proj.weight" in self.w:
            x = F.linear(x, self.w["resampler.kv_proj.weight"])
        x = self.ln("ln_kv", x).permute(1, 0, 2)  # L * B * D
        q = self.ln("ln_q", self.w["resampler.query"])  # Q * D
        out = self.attn(q.unsqueeze(1).repeat(1, bs, 1), x + pos_embed, x,
                        key_padding_mask=key_padding_mask)[0]
        x = out.permute(1, 0, 2)  # B * Q * D
        return self.ln("ln_post", x) @ self.w["resampler.proj"]


def main():
    mode, in_path, out_path = sys.argv[1:4]
    tensors, metadata = read_safetensors(in_path)
    c = json.loads(metadata["config"])
    tgt_sizes = tensors.get("input.tgt_sizes")
    if tgt_sizes is not None:
        tgt_sizes = tgt_sizes.to(torch.int32)  # as MiniCPMVImageProcessor returns them
    with torch.no_grad():
        if mode == "siglip":
            strips = [tensors[f"input.pixel_values.{i}"] for i in range(len(tgt_sizes))]
            out = siglip(tensors, strips, tgt_sizes, c)
        elif mode == "position_ids":
            max_len = int(max(int(h) * int(w) for h, w in tgt_sizes))
            out = navit_position_ids(patch_mask(tgt_sizes, max_len), tgt_sizes, c["num_patches_per_side"])
        elif mode == "resampler":
            out = Resampler(tensors, c).forward(tensors["input.x"], tgt_sizes)
        elif mode == "pos_embed":
            table = get_2d_sincos_pos_embed(c["embed_dim"], [c["h"], c["w"]])
            out = torch.from_numpy(table.reshape(c["h"] * c["w"], -1)).float()
        else:
            raise SystemExit(f"unknown mode {mode}")
    write_safetensors(out_path, {"output": out})
    print(f"vision_reference.py {mode}: torch {torch.__version__}, numpy {np.__version__}, "
          f"output {tuple(out.shape)}", file=sys.stderr)


if __name__ == "__main__":
    main()
