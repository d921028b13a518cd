"""
Qwen-VL-Chat, the paper's model (Bai et al. 2023; Martin-Fernandez et al. fine-tuned its Int4 release), written here
for current PyTorch and transformers: its official remote code runs only on transformers <= ~4.53 with auto-gptq.

    config    QWenConfig, read from the checkpoint's config.json (model_type "qwen", its `visual` dict)
    vision    448 x 448 image -> 14 x 14 patches (conv1) + a learned 256-row position table, bicubically resized to
              the patch grid -> pre-LN blocks -> Resampler: 256 learned queries with 2-D sin-cos positions, one
              cross-attention over the patches -> ln_post -> @ proj: 256 features an image, in the LM's width
    language  wte -> blocks (RMSNorm, fused c_attn with bias, rotary on halves, c_proj; RMSNorm, w1 * silu(w2),
              c_proj) -> ln_f -> lm_head. The 256 positions between each <img> and </img> hold that image's
              features. Past seq_length (2048), at inference: dynamic NTK (a larger rotary base) and log-n scaling
              of the queries, as the official code does.

Weights load by their official names from a local folder or a hub id, the fp16 release (optionally into NF4 with
bitsandbytes) or the GPTQ Int4 one as it is (gptqmodel's kernel); never with trust_remote_code. verify.py checks this
file against the official code's outputs (python model.py --verify DIR).

One file of ~600 lines, as nanoGPT's model.py holds its GPT and its from_pretrained: the modules (~420 lines) and the
loading (~180) are one job, the model by its official names; split, each half would be read against the other.
"""

import json
import math
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from plumbing.errors import InputError

# The modules the official Int4 release quantizes, in every block of the language model: what `--modules all` reaches.
QUANTIZED = ("attn.c_attn", "attn.c_proj", "mlp.w1", "mlp.w2", "mlp.c_proj")


# -----------------------------------------------------------------------------
# configuration


@dataclass
class VisualConfig:
    image_size: int  # side of the square an image is resized to (448)
    patch_size: int  # conv1's kernel and stride (14): (448 / 14)^2 = 1024 patches
    width: int  # the vision blocks' width (1664)
    layers: int  # vision blocks (48)
    heads: int  # their attention heads (16)
    mlp_ratio: float  # MLP width / width (4.9231: 8192)
    output_dim: int  # the features' width: the LM's hidden size (4096)
    image_start_id: int  # id of <img>; </img> and <imgpad> follow it
    n_queries: int = 256  # the Resampler's queries: features an image, the tokens between <img> and </img>


@dataclass
class QWenConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int  # w1 and w2 have intermediate_size // 2 outputs each
    kv_channels: int  # rotary dimension per head (rotary_pct = 1)
    visual: VisualConfig
    seq_length: int = 2048  # the training length: dynamic NTK and log-n scaling start past it
    layer_norm_epsilon: float = 1e-6
    rotary_emb_base: float = 10000
    rotary_pct: float = 1.0
    use_dynamic_ntk: bool = True
    use_logn_attn: bool = True
    no_bias: bool = True  # attn.c_proj and the MLP have no bias; c_attn always has one
    tie_word_embeddings: bool = False
    quantization_config: dict | None = None  # the Int4 release's GPTQ settings
    model_type: str = "qwen"
    extra: dict = field(default_factory=dict, repr=False)  # the rest of config.json, kept as it was

    REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "kv_channels", "visual")
    VISUAL_REQUIRED = ("image_size", "patch_size", "width", "layers", "heads", "mlp_ratio", "output_dim",
                       "image_start_id")

    @classmethod
    def from_dict(cls, d, where="config.json"):
        """A config.json's content; a missing key is an InputError naming the file and the key."""
        if d.get("model_type") != "qwen":
            raise InputError(f"{where}: model_type {d.get('model_type')!r} is not Qwen-VL's 'qwen'")
        for key in cls.REQUIRED:
            if key not in d:
                raise InputError(f"{where}: no {key!r}: not a Qwen-VL configuration")
        visual = d["visual"]
        for key in cls.VISUAL_REQUIRED:
            if key not in visual:
                raise InputError(f"{where}: the 'visual' dict has no {key!r}")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        fields = {k: v for k, v in d.items() if k in known}
        fields["visual"] = VisualConfig(**{k: v for k, v in visual.items() if k in VisualConfig.__dataclass_fields__})
        config = cls(**fields, extra={k: v for k, v in d.items() if k not in known})
        if config.rotary_pct != 1.0:
            raise InputError(f"{where}: rotary_pct {config.rotary_pct} (every release has 1.0) is not supported")
        return config

    @classmethod
    def from_file(cls, path):
        try:
            with open(path) as f:
                return cls.from_dict(json.load(f), path)
        except FileNotFoundError:
            raise InputError(f"{path}: missing")
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: line {e.lineno}: malformed JSON ({e.msg})")

    @classmethod
    def from_pretrained(cls, model_id):
        """The configuration of a folder or hub id (peft reads the base model's this way when it saves an adapter)."""
        return cls.from_file(os.path.join(folder_of(model_id), "config.json"))

    def to_dict(self):
        d = asdict(self)
        return {**d.pop("extra"), **d}

    def get_text_config(self, *args, **kwargs):
        """The language model's configuration, as transformers' multimodal configurations give theirs: this one (peft's
        prompt tuning reads the vocabulary's size from it)."""
        return self


# -----------------------------------------------------------------------------
# the vision tower


def resize_positions(table, n):
    """A (k*k, C) position table -> (n, C) for an sqrt(n) x sqrt(n) grid: bicubic, in float32, as the official code
    resizes both the patches' learned table and the Resampler keys' sin-cos one."""
    src, dst = math.isqrt(table.shape[0]), math.isqrt(n)
    if src == dst:
        return table
    grid = table.float().reshape(1, src, src, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(dst, dst), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).flatten(0, 2).to(table.dtype)


def sincos_2d(dim, grid):
    """The fixed 2-D sin-cos table of the Resampler's queries (MAE's): half the channels encode a cell's row, half its
    column, each as [sin, cos] of the position times 1 / 10000^(2i/d), computed in float32 (numpy's, as the release)."""
    import numpy as np

    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float32) / (dim / 4.0))
    w, h = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    halves = [np.einsum("m,d->md", p.reshape(-1), omega) for p in (w, h)]
    return torch.from_numpy(np.concatenate([np.concatenate([np.sin(x), np.cos(x)], 1) for x in halves], 1)).float()


class VisualAttention(nn.Module):
    """Self-attention whose in_proj rows are laid out per head, [q_h, k_h, v_h] for each head h (not [Q; K; V])."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x):  # (batch, patches, width)
        b, n, _ = x.shape
        q, k, v = self.in_proj(x).view(b, n, self.heads, -1).transpose(1, 2).chunk(3, dim=-1)
        return self.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1))


class VisualBlock(nn.Module):
    def __init__(self, width, heads, mlp_ratio):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = VisualAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Resampler(nn.Module):
    """n_queries learned queries read the patches in one cross-attention: every image becomes n_queries features.
    The queries get the sin-cos table, the keys the same table resized to the patch grid, the values no position."""

    def __init__(self, n_queries, dim, kv_dim):
        super().__init__()
        self.pos_embed = nn.Parameter(sincos_2d(dim, math.isqrt(n_queries)), requires_grad=False)
        self.query = nn.Parameter(torch.zeros(n_queries, dim))
        self.kv_proj = nn.Linear(kv_dim, dim, bias=False) if kv_dim != dim else nn.Identity()
        self.attn = nn.MultiheadAttention(dim, dim // 128, batch_first=True)  # one head per 128 channels
        self.ln_q = nn.LayerNorm(dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):  # (batch, patches, kv_dim)
        x = self.ln_kv(self.kv_proj(x))
        q = (self.ln_q(self.query) + self.pos_embed).expand(len(x), -1, -1)
        return self.attn(q, x + resize_positions(self.pos_embed, x.shape[1]), x, need_weights=False)[0]


class VisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c.width, kernel_size=c.patch_size, stride=c.patch_size, bias=False)
        self.positional_embedding = nn.Parameter(torch.zeros(256, c.width))  # 16 x 16, resized to the patch grid
        self.ln_pre = nn.LayerNorm(c.width, eps=1e-6)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(VisualBlock(c.width, c.heads, c.mlp_ratio) for _ in range(c.layers))
        self.attn_pool = Resampler(c.n_queries, c.output_dim, c.width)
        self.ln_post = nn.LayerNorm(c.output_dim, eps=1e-6)
        self.proj = nn.Parameter(torch.zeros(c.output_dim, c.output_dim))

    def forward(self, pixel_values):  # (images, 3, S, S), normalized -> (images, n_queries, output_dim)
        x = self.conv1(pixel_values.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        x = self.ln_pre(x + resize_positions(self.positional_embedding, x.shape[1]))
        for block in self.transformer.resblocks:
            x = block(x)
        return self.ln_post(self.attn_pool(x)) @ self.proj


# -----------------------------------------------------------------------------
# the language model


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # normalized in float32 whatever the compute dtype, then scaled in it: the release's order
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotary(x, cos, sin):
    """Rotary positions on the two halves of each head (not interleaved pairs), computed in float32."""
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).type_as(x)


class QWenAttention(nn.Module):
    def __init__(self, c, layer):
        super().__init__()
        self.heads, self.layer = c.num_attention_heads, layer
        self.c_attn = nn.Linear(c.hidden_size, 3 * c.kv_channels * c.num_attention_heads)
        self.c_proj = nn.Linear(c.kv_channels * c.num_attention_heads, c.hidden_size, bias=not c.no_bias)

    def forward(self, x, cos, sin, mask, logn, cache):
        b, n, _ = x.shape
        q, k, v = (t.view(b, n, self.heads, -1) for t in self.c_attn(x).chunk(3, dim=-1))
        q, k = rotary(q, cos, sin), rotary(k, cos, sin)
        if logn is not None:
            q = q * logn.type_as(q)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, self.layer)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))
        return self.c_proj(y.transpose(1, 2).reshape(b, n, -1))


class QWenMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.w1 = nn.Linear(c.hidden_size, c.intermediate_size // 2, bias=not c.no_bias)
        self.w2 = nn.Linear(c.hidden_size, c.intermediate_size // 2, bias=not c.no_bias)
        self.c_proj = nn.Linear(c.intermediate_size // 2, c.hidden_size, bias=not c.no_bias)

    def forward(self, x):
        return self.c_proj(self.w1(x) * F.silu(self.w2(x)))  # the gate is w2's, not w1's


class QWenBlock(nn.Module):
    def __init__(self, c, layer):
        super().__init__()
        self.ln_1 = RMSNorm(c.hidden_size, c.layer_norm_epsilon)
        self.attn = QWenAttention(c, layer)
        self.ln_2 = RMSNorm(c.hidden_size, c.layer_norm_epsilon)
        self.mlp = QWenMLP(c)

    def forward(self, x, cos, sin, mask, logn, cache=None):
        x = x + self.attn(self.ln_1(x), cos, sin, mask, logn, cache)
        return x + self.mlp(self.ln_2(x))


def ntk_alpha(length, seq_length):
    """Dynamic NTK: a prompt longer than the training length gets a rotary base scaled by alpha^(d/(d-2)), alpha the
    next 2^k - 1 that covers it (1 up to seq_length, 3 up to twice it, 7 up to 4 times...)."""
    return max(2 ** math.ceil(math.log(length / seq_length, 2) + 1) - 1, 1)


class QWenModel(nn.Module):
    """The official `transformer`: embeddings, the vision tower, the blocks and the final norm."""

    def __init__(self, c):
        super().__init__()
        self.config = c
        self.wte = nn.Embedding(c.vocab_size, c.hidden_size)
        self.visual = VisionTransformer(c.visual)
        self.h = nn.ModuleList(QWenBlock(c, i) for i in range(c.num_hidden_layers))
        self.ln_f = RMSNorm(c.hidden_size, c.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self._logn = torch.ones(0)

    def place_images(self, h, input_ids, features):
        """The hidden states with the n_queries positions after each <img> replaced by that image's features, the
        images taken in reading order (row by row, left to right), as the processor lays out pixel_values."""
        start = self.config.visual.image_start_id
        spans = (input_ids == start).nonzero()
        if len(spans) != len(features):
            raise InputError(f"{len(spans)} images in the prompts but {len(features)} images given")
        n = features.shape[1]
        if spans.numel() and not bool((input_ids[spans[:, 0], spans[:, 1] + n + 1] == start + 1).all()):
            raise InputError(f"an image span is not <img> + {n} ids + </img>")
        rows = spans[:, 0, None].expand(-1, n).reshape(-1)
        cols = (spans[:, 1, None] + 1 + torch.arange(n, device=h.device)).reshape(-1)
        return h.index_put((rows, cols), features.reshape(-1, features.shape[-1]).to(h.dtype))

    def image_marks(self, h):
        """For input embeddings given without their ids (prompt tuning puts learned ones before the prompt's): a (b, n)
        tensor with <img>'s and </img>'s ids where h holds their embedding rows, -1 elsewhere, for place_images. So
        transformers finds the image tokens among input embeddings too; a learned embedding equal to a row of the
        vocabulary's, to the last bit, is never met."""
        start = self.config.visual.image_start_id
        marks = torch.full(h.shape[:2], -1, dtype=torch.long, device=h.device)
        for token in (start, start + 1):
            marks[(h == self.wte.weight[token].to(h.dtype)).all(-1)] = token
        return marks

    def logn(self, positions):
        """log_seq_length(p + 1) past the training length, else 1, for 0-based positions: the official table (computed
        with Python's math.log, then float32)."""
        top = int(positions.max()) + 1
        if len(self._logn) < top:
            s = self.config.seq_length
            self._logn = torch.tensor([math.log(i, s) if i > s else 1 for i in range(1, 2 * top + 1)])
        return self._logn.to(positions.device)[positions]

    def forward(self, input_ids, attention_mask=None, pixel_values=None, position_ids=None, past_key_values=None,
                output_hidden_states=False, inputs_embeds=None):
        c, cache = self.config, past_key_values
        past = cache.get_seq_length() if cache is not None else 0
        h = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        b, n = h.shape[:2]
        if pixel_values is not None:
            # the vision tower is frozen: no graph through it unless something in it trains
            with torch.set_grad_enabled(torch.is_grad_enabled() and any(p.requires_grad for p in self.visual.parameters())):
                features = self.visual(pixel_values)
            h = self.place_images(h, self.image_marks(h) if input_ids is None else input_ids, features)
        # Positions: the index in the (left-padded) sequence, as the official code counts them (it ignores
        # position_ids); given ones (a tree of answers read at once, predict.py) are used as they are.
        if position_ids is None:
            position_ids = torch.arange(past, past + n, device=h.device).expand(b, -1)
        if self.training or not c.use_dynamic_ntk:
            alpha = 1
        elif past == 0:  # the prefill sets the alpha; decoding steps keep it, as the release's rotary cache does
            alpha = ntk_alpha(n, c.seq_length)
        else:
            alpha = getattr(cache, "qwen_ntk_alpha", 1)
        if cache is not None and past == 0:
            cache.qwen_ntk_alpha = alpha
        dim = c.kv_channels
        base = c.rotary_emb_base * alpha ** (dim / (dim - 2))
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=h.device).float() / dim))
        freqs = position_ids.float()[..., None] * inv_freq
        freqs = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]  # (b, n, 1 head, dim)
        cos, sin = freqs.cos(), freqs.sin()
        logn = self.logn(position_ids)[:, :, None, None] if c.use_logn_attn and not self.training else None
        mask = self.attention_mask(attention_mask, b, n, past, h.device)
        hidden = [h] if output_hidden_states else None
        for i, block in enumerate(self.h):
            if self.gradient_checkpointing and self.training:
                h = torch.utils.checkpoint.checkpoint(block, h, cos, sin, mask, logn, use_reentrant=False)
            else:
                h = block(h, cos, sin, mask, logn, cache)
            if output_hidden_states and i < len(self.h) - 1:
                hidden.append(h)
        h = self.ln_f(h)
        if output_hidden_states:
            hidden.append(h)
        return h, hidden

    @staticmethod
    def attention_mask(mask, b, n, past, device):
        """An additive (b, 1, n, past + n) mask: 0 where a query may look, the float32 minimum where it may not.
        mask: (b, past + n) with 1 for real tokens (causal on top of it), or (b, 1, n, past + n) bool (True: may look)
        taken as it is. A query that may look nowhere (a left-padding position) looks everywhere instead: its output
        is never read, but a row with nothing to attend is NaN in some kernels (CUDA's memory-efficient SDPA; the
        minimum is -inf in bf16), and 0 x NaN would carry it into every real position of the next layer."""
        if mask is not None and mask.dim() == 4:
            allowed = mask.bool()
        else:
            q = torch.arange(past, past + n, device=device)
            allowed = (torch.arange(past + n, device=device)[None, :] <= q[:, None])[None, None]
            if mask is not None:
                allowed = allowed & mask.bool()[:, None, None, :]
        allowed = allowed | ~allowed.any(-1, keepdim=True)
        return torch.zeros(allowed.shape, device=device).masked_fill_(~allowed, torch.finfo(torch.float32).min)


class QWenLMHeadModel(nn.Module):
    """Qwen-VL-Chat: `transformer` and `lm_head`, by the official names. forward takes what the project's batches
    hold (input_ids, attention_mask, pixel_values) and returns logits of the last `logits_to_keep` positions (0: all);
    given `labels`, also the official code's loss (for HF Trainer: bench.py's baseline; training here uses
    train.score_loss). It takes input embeddings instead of the ids (`inputs_embeds`), the images then placed between
    the embeddings of <img> and </img>: what peft's prompt tuning gives, its learned tokens before the prompt."""

    # HF Trainer passes its count of label tokens only to a model that asks for it; this loss is the mean, as the
    # official code's, which Trainer then divides by the accumulation steps itself
    accepts_loss_kwargs = False

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = QWenModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.name_or_path = None
        # transformers' generation settings, which peft's causal-LM wrapper (prompt tuning) hands on around generate;
        # this model's generate takes its settings as arguments
        self.generation_config = None

    @property
    def device(self):
        return self.lm_head.weight.device

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        """transformers' step of generation, which peft's causal-LM wrapper (prompt tuning) reads when it wraps a model;
        this model's generate runs its own loop without it: the inputs as they are."""
        return dict(input_ids=input_ids, **kwargs)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None):
        self.transformer.gradient_checkpointing = True  # always non-reentrant: the frozen embeddings need no grad

    def activation_checkpointing_disable(self):
        self.transformer.gradient_checkpointing = False

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, position_ids=None, past_key_values=None,
                use_cache=False, logits_to_keep=0, output_hidden_states=False, labels=None, inputs_embeds=None, **unused):
        from transformers.modeling_outputs import CausalLMOutputWithPast

        if position_ids is not None and position_ids.dim() == 3:  # (sections, b, n) of Qwen2-VL's rope: all alike here
            position_ids = position_ids[0]
        h, hidden = self.transformer(input_ids, attention_mask, pixel_values, position_ids,
                                     past_key_values if use_cache else None, output_hidden_states, inputs_embeds)
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)
        loss = None
        if labels is not None:  # the mean cross-entropy of each kept position's next token, -100 ignored
            targets = labels[:, labels.shape[1] - logits.shape[1] + 1:].to(logits.device)
            loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(), ignore_index=-100)
        # the cache's field is `cache` from transformers 5.2x, `past_key_values` before (the GPU image's release)
        field = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=tuple(hidden) if hidden else None,
                                      **{field: past_key_values if use_cache else None})

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, pixel_values=None, max_new_tokens=20, do_sample=False,
                 temperature=1.0, top_p=1.0, num_return_sequences=1, eos_token_id=None, pad_token_id=None,
                 output_scores=False, **unused):
        """Greedy or nucleus sampling with the KV cache, for writing captions (folder.py); returns the prompt ids
        followed by the new ones, as transformers' generate does, and with output_scores each step's logits (B, steps,
        vocabulary) beside them."""
        from transformers import DynamicCache

        if num_return_sequences > 1:  # each prompt repeated, with its images
            per_row = (input_ids == self.config.visual.image_start_id).sum(1).tolist()
            input_ids = input_ids.repeat_interleave(num_return_sequences, 0)
            attention_mask = None if attention_mask is None else attention_mask.repeat_interleave(num_return_sequences, 0)
            if pixel_values is not None:
                images = list(torch.split(pixel_values, per_row))
                pixel_values = torch.cat([x for x in images for _ in range(num_return_sequences)])
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        cache, out, scores = DynamicCache(), [], []
        done = torch.zeros(len(input_ids), dtype=torch.bool, device=input_ids.device)
        # an id, or a list of them (as transformers' generate takes)
        ends = None if eos_token_id is None else torch.as_tensor(eos_token_id, device=input_ids.device)
        logits = self(input_ids, mask, pixel_values, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        for _ in range(max_new_tokens):
            scores.append(logits)
            if do_sample:
                probs = (logits.float() / temperature).softmax(-1)
                sorted_p, order = probs.sort(-1, descending=True)
                sorted_p[(sorted_p.cumsum(-1) - sorted_p) > top_p] = 0  # keep the smallest set with mass top_p
                token = order.gather(-1, torch.multinomial(sorted_p, 1))[:, 0]
            else:
                token = logits.argmax(-1)
            if pad_token_id is not None:
                token = torch.where(done, pad_token_id, token)
            out.append(token)
            if ends is not None:
                done |= torch.isin(token, ends)
            if done.all():
                break
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
            logits = self(token[:, None], mask, past_key_values=cache, use_cache=True).logits[:, -1]
        ids = torch.cat([input_ids, torch.stack(out, 1)], dim=1)
        return (ids, torch.stack(scores, 1)) if output_scores else ids


# -----------------------------------------------------------------------------
# loading a checkpoint


def folder_of(model_id):
    """A local folder as it is; a hub id downloaded (config, tokenizer and safetensors weights only)."""
    if os.path.isdir(model_id):
        return model_id
    from huggingface_hub import snapshot_download

    return from_hub(model_id, snapshot_download, allow_patterns=["*.json", "*.safetensors", "qwen.tiktoken"])


def from_hub(model_id, download, *args, **kwargs):
    """
    download(model_id, *args, **kwargs) with huggingface_hub's hf_hub_download or snapshot_download, for an id that is
    no folder here. Where it fails, one line says why: no such folder (an id that reads as a path: not a hub id's
    `name` or `owner/name`, or one whose `owner` is a folder here, as runs/ in runs/tiny), the hub not reachable
    (offline or no network, and nothing of it in the local cache), no such model on the hub, or what the hub said.
    """
    from huggingface_hub import constants, errors
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model_id)
        a_path = os.path.isdir(os.path.dirname(model_id))
    except errors.HFValidationError:
        a_path = True
    if a_path:
        raise InputError(f"{model_id}: no such folder")
    try:
        return download(model_id, *args, **kwargs)
    except errors.GatedRepoError:
        raise InputError(f"{model_id}: gated on the hub: accept its terms on its page and log in (hf auth login)")
    except errors.RepositoryNotFoundError:  # the hub answers so for a private model too, to a login without access
        raise InputError(f"{model_id}: no such folder here, nor a model on the hub (or a private one: log in)")
    except errors.LocalEntryNotFoundError:  # the hub did not answer, and the local cache has nothing of it
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "no network, or the hub is down"
        raise InputError(f"{model_id}: not a folder here, and the hub is not reachable ({why}) with nothing of it in "
                         "the local cache: download it where the hub is reachable, or pass a local folder")
    except errors.HfHubHTTPError as e:  # a file missing from the model, a revision, the hub's own errors
        raise InputError(f"{model_id}: the hub says {str(e).splitlines()[0]}")
    except Exception as e:  # a proxy that refuses, a full disk: whatever else stops the download, said in one line
        first = str(e).partition("\n")[0]
        raise InputError(f"{model_id}: cannot fetch it from the hub ({type(e).__name__}: {first})")


def read_weights(folder):
    """Every tensor of the checkpoint by name: safetensors (one file or shards with an index); a .bin only through
    torch.load(weights_only=True), which reads tensors and never runs pickled code."""
    from safetensors.torch import load_file

    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not files:
        files = sorted(f for f in os.listdir(folder) if f.endswith(".bin"))
        if not files:
            raise InputError(f"{folder}: no weights (*.safetensors or *.bin)")
        load = lambda path: torch.load(path, map_location="cpu", weights_only=True)  # noqa: E731
    else:
        load = load_file
    state = {}
    for name in files:
        try:
            state.update(load(os.path.join(folder, name)))
        except Exception as e:
            raise InputError(f"{os.path.join(folder, name)}: cannot read the weights ({str(e).splitlines()[0]})")
    return state


def check_weights(model, state, folder):
    """Every tensor the model needs is in the checkpoint with its shape; a missing, misshapen or unknown one is an
    InputError naming the tensor, before anything is loaded."""
    expected = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name, p in expected.items():
        if name not in state:
            raise InputError(f"{folder}: the checkpoint has no tensor {name}")
        if tuple(state[name].shape) != tuple(p.shape):
            raise InputError(f"{folder}: tensor {name} has shape {tuple(state[name].shape)}, expected {tuple(p.shape)}")
    unknown = sorted(set(state) - set(expected))
    if unknown:
        raise InputError(f"{folder}: unexpected tensor {unknown[0]}" + (f" and {len(unknown) - 1} more" if unknown[1:] else ""))


def language_linears(model, names=QUANTIZED):
    """(full name, module) of the language model's layers of `names` in every block: never the vision tower's."""
    for i, block in enumerate(model.transformer.h):
        for name in names:
            yield f"transformer.h.{i}.{name}", block.get_submodule(name)


def replace(model, name, module):
    parent, child = name.rsplit(".", 1)
    setattr(model.get_submodule(parent), child, module)


def gptq_environment(device):
    """What gptqmodel needs here, set before it loads: it sizes its CPU thread pools from the machine and stops on a
    2-core one unless told how many to use; on a CPU its torch kernel would compile the dequantization (torch.compile:
    ~20 s at the first forward, for a gain only large layers see)."""
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, os.cpu_count() or 1)))
    if str(device).startswith("cpu"):
        import torch._dynamo

        torch._dynamo.config.disable = True


def gptq_layers(model, config):
    """The GPTQ release's quantized layers as gptqmodel's TorchLinear, whose gradients are right after an eval pass
    (the faster CPU kernels switch to an inference path and pass none back through frozen layers)."""
    from gptqmodel.nn_modules.qlinear.torch import TorchLinear
    from gptqmodel.quantization import FORMAT

    q = config.quantization_config
    if q.get("quant_method") != "gptq" or q.get("bits") != 4 or q.get("desc_act"):
        raise InputError(f"quantization {q}: only 4-bit GPTQ without desc_act (the Int4 release's) is supported")
    for name, linear in list(language_linears(model)):
        layer = TorchLinear(bits=4, group_size=q["group_size"], sym=q.get("sym", True), desc_act=False,
                            in_features=linear.in_features, out_features=linear.out_features, bias=True,
                            pack_dtype=torch.int32, format=FORMAT.GPTQ)
        replace(model, name, layer)


def nf4_layers(model, dtype):
    """The language model's Linear layers as bitsandbytes NF4 with double quantization; the vision tower, the
    embeddings and lm_head stay as they are (quantizing a tiny vision tower cost 0.3 SRCC)."""
    import bitsandbytes as bnb

    for name, linear in list(language_linears(model)):
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                  compute_dtype=dtype, compress_statistics=True, quant_type="nf4", device="meta")
        layer.weight = bnb.nn.Params4bit(linear.weight.data.to(dtype), requires_grad=False, compress_statistics=True,
                                         quant_type="nf4")
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.data.to(dtype), requires_grad=False)
        replace(model, name, layer)


def from_pretrained(model_id, dtype=torch.float32, device="cpu", quant="none"):
    """
    Qwen-VL-Chat from a folder or hub id, frozen, on `device`, its floating tensors in `dtype`. A GPTQ checkpoint
    (Qwen-VL-Chat-Int4) loads as it is; otherwise quant "nf4" puts the language model's linear layers in NF4.
    """
    folder = folder_of(model_id)
    config = QWenConfig.from_pretrained(folder)
    state = read_weights(folder)
    with torch.device("meta"):
        model = QWenLMHeadModel(config)
    gptq = config.quantization_config is not None
    if gptq:
        gptq_environment(device)
        gptq_layers(model, config)
    check_weights(model, state, folder)
    # Floating tensors in the compute dtype, except GPTQ's scales: in float32, a weight dequantizes exactly
    # (scale x (code - zero) rounds in fp16 and bf16) before the matmul casts it to the compute dtype.
    state = {k: v if not v.is_floating_point() else v.float() if k.endswith(".scales") else v.to(dtype)
             for k, v in state.items()}
    model.load_state_dict(state, assign=True)
    model.requires_grad_(False)
    if gptq:
        from gptqmodel.nn_modules.qlinear.torch import TorchLinear
        from gptqmodel.utils.model import hf_convert_gptq_v1_to_v2_format

        # the Int4 release stores auto-gptq's "v1" zero points (zero - 1); the kernel reads v2
        hf_convert_gptq_v1_to_v2_format(model, 4, TorchLinear, "gptq", None)
        for _, layer in language_linears(model):
            layer.post_init()
    elif quant == "nf4":
        nf4_layers(model, dtype)
    model = model.to(device)
    model.name_or_path = model_id
    return model.eval()
