"""The fast policy step: the model's own layers at static shapes, replayed as CUDA graphs on a GPU.

The eager step (`VLAPolicy.act` without this) runs the prefill and the 6 cached decode steps through
transformers' generation code: about 12k kernel launches a step (twice that with PEFT's LoRA layers), each
launched by Python, which bound it on a GPU. Here the prompt is padded to a multiple of PROMPT_MULTIPLE tokens and
the batch to a power of two, keys and values go to preallocated buffers, and every decode step has the same
shapes. On CUDA the prefill and the decode step of each (batch, prompt length) are captured once as CUDA graphs
and then replayed: one launch each; the first replay of each is checked against the same functions run without
graphs, on real inputs. On the CPU there are no graphs and the same functions run as they are, which is what the
tests compare with the eager step.

The modules are the model's own: the vision backbone, the projector, the embeddings and each LlamaDecoderLayer
of transformers (with a LoRA adapter's layers when there is one), called in the same order with the same
masks and positions as the eager step. Only the last hidden state of each row meets the output layer (the eager
step computes the logits of every prompt position).
"""

from typing import Optional

import torch

from openvla_policy.prismatic import base_vla, multimodal_embeddings, multimodal_mask

PROMPT_MULTIPLE = 16  # prompt tokens are padded to a multiple of this: a few lengths, a few graphs
# The most a captured shape's first replay may differ from the same functions run without graphs, relative to the
# largest logit: the same kernels give 0; an output overwritten too early or a value frozen at capture gives 5-60%.
REPLAY_TOLERANCE = 1e-2


class StaticKVCache:
    """Keys and values of every layer in preallocated (batch, heads, length, head_dim) buffers, written in place at
    the given slots. transformers' attention layers call `update` on whatever cache they are handed."""

    def __init__(self, keys: list, values: list):
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, layer_idx: int, cache_kwargs: dict):
        slots = cache_kwargs["cache_position"]
        self.keys[layer_idx].index_copy_(2, slots, key_states)
        self.values[layer_idx].index_copy_(2, slots, value_states)
        return self.keys[layer_idx], self.values[layer_idx]


def batch_bucket(batch: int) -> int:
    return 1 << (batch - 1).bit_length()  # the next power of two


def prompt_bucket(length: int) -> int:
    return -(-length // PROMPT_MULTIPLE) * PROMPT_MULTIPLE


def attention_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, queries, keys) booleans -> the additive (B, 1, queries, keys) mask transformers' attention layers take."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]


class StaticShapes:
    """The buffers and the two static-shape functions of one (batch, prompt tokens) pair.

    Inputs are copied into the `input_*` buffers; `prefill()` fills the KV cache and returns the first token's
    action logits (batch, 256); `decode()` feeds `token` as decoded token number `decode_step` (0-5) and returns the
    next token's.
    """

    def __init__(self, step: "FastActionStep", batch: int, text_length: int, num_patches: int, image_shape: tuple):
        device, dtype = step.device, step.dtype
        self.step, self.batch, self.num_patches = step, batch, num_patches
        self.prompt_length = num_patches + text_length
        # Cache slots: the prompt, then the decoded tokens; a multiple of 16, as memory-efficient attention wants.
        self.length = prompt_bucket(self.prompt_length + step.num_decode_steps)
        self.input_ids = torch.zeros(batch, text_length, dtype=torch.long, device=device)
        self.input_mask = torch.ones(batch, text_length, dtype=torch.long, device=device)  # no empty row to warm up
        self.input_pixels = torch.zeros(batch, *image_shape, dtype=dtype, device=device)
        self.input_lengths = torch.ones(batch, dtype=torch.long, device=device)
        self.token = torch.zeros(batch, dtype=torch.long, device=device)
        self.decode_step = torch.zeros((), dtype=torch.long, device=device)
        self.prompt_keys = torch.zeros(batch, self.length, dtype=torch.bool, device=device)
        self.slots = torch.arange(self.length, device=device)
        self.cache = step.cache_views(batch, self.length)

    def run_layers(self, hidden, allowed, position_ids, slots):
        bias = attention_bias(allowed, hidden.dtype)
        for layer in self.step.layers:
            hidden = layer(
                hidden,
                attention_mask=bias,
                position_ids=position_ids,
                past_key_value=self.cache,
                use_cache=True,
                cache_position=slots,
            )[0]
        return self.step.norm(hidden)

    def prefill(self) -> torch.Tensor:
        vla, batch, n = self.step.vla, self.batch, self.num_patches
        embeds = multimodal_embeddings(vla, self.input_ids, self.input_pixels)
        prompt_mask = multimodal_mask(self.input_mask, n).bool()
        self.prompt_keys.zero_()
        self.prompt_keys[:, : self.prompt_length] = prompt_mask
        slots = self.slots[: self.prompt_length]
        # Query i sees the prompt's real tokens up to i: the causal mask with the right padding cut out.
        allowed = (slots[None, :, None] >= self.slots[None, None, :]) & self.prompt_keys[:, None, :]
        hidden = self.run_layers(embeds, allowed, slots[None].expand(batch, -1), slots)
        last = hidden[torch.arange(batch, device=hidden.device), n + self.input_lengths - 1]
        return self.step.action_logits(last)

    def decode(self) -> torch.Tensor:
        slot = self.prompt_length + self.decode_step
        # The padding leaves a gap: the row's next position follows its own prompt, its slot follows the longest.
        position_ids = (self.num_patches + self.input_lengths + self.decode_step)[:, None]
        decoded = (self.slots >= self.prompt_length) & (self.slots <= slot)
        allowed = (self.prompt_keys | decoded[None])[:, None, :]
        embeds = self.step.vla.get_input_embeddings()(self.token[:, None])
        hidden = self.run_layers(embeds, allowed, position_ids, slot[None])
        return self.step.action_logits(hidden[:, 0])


class CapturedShapes:
    """StaticShapes' two functions captured as CUDA graphs: `prefill()` and `decode()` replay them."""

    def __init__(self, shapes: StaticShapes, pool):
        self.shapes, self.checked = shapes, False
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: cuBLAS workspaces, lazy initialisation
            shapes.prefill()
            shapes.decode()
        torch.cuda.current_stream().wait_stream(side)
        self.prefill_graph, self.decode_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.prefill_graph, pool=pool):
            self.prefill_logits = shapes.prefill()
        with torch.cuda.graph(self.decode_graph, pool=pool):
            self.decode_logits = shapes.decode()

    def prefill(self) -> torch.Tensor:
        self.prefill_graph.replay()
        return self.prefill_logits

    def decode(self) -> torch.Tensor:
        self.decode_graph.replay()
        return self.decode_logits


def uncaptured(shapes) -> StaticShapes:
    """The static-shape functions and buffers, of StaticShapes or of CapturedShapes."""
    return shapes.shapes if isinstance(shapes, CapturedShapes) else shapes


@torch.no_grad()
def replay_difference(static: StaticShapes, replayed, num_decode_steps: int, first_action_token: int) -> float:
    """Largest |difference| of the action logits of a prefill and every decode step between `replayed` (a
    CapturedShapes) and `static`, its functions run as they are, on the inputs in the buffers and the greedy tokens,
    relative to the largest |logit|. Draws no random number; leaves the buffers ready for a prefill."""
    runs, tokens = [], []
    for step in (static, replayed):
        static.decode_step.zero_()
        logits = [step.prefill().to(torch.float32, copy=True)]  # copies: a graph's next replay overwrites its output
        for k in range(num_decode_steps):
            if len(tokens) == k:
                tokens.append(logits[-1].argmax(-1) + first_action_token)
            static.token.copy_(tokens[k])
            static.decode_step.fill_(k)
            logits.append(step.decode().to(torch.float32, copy=True))
        runs.append(torch.stack(logits))
    static.decode_step.zero_()
    return ((runs[1] - runs[0]).abs().max() / runs[0].abs().max().clamp_min(1e-6)).item()


class FastActionStep:
    """Serves VLAPolicy.act: `start(inputs, lengths)` -> the first token's action logits (B, 256), then
    `advance(tokens, k)` -> the logits of token k + 1 after the chosen action-token ids of token k."""

    def __init__(self, model, num_decode_steps: int, action_rows: slice):
        # Graphs replay the modules as they were at capture: VLAPolicy builds a new step when its model changes.
        self.model = model
        self.vla = vla = base_vla(model)
        language_model = vla.language_model
        attention = language_model.config._attn_implementation
        if attention != "sdpa":
            raise ValueError(
                f"the fast policy step runs the model's SDPA attention layers, and this model was loaded with "
                f"{attention!r}; load it with attn_implementation='sdpa' or use the eager step"
            )
        self.layers, self.norm = language_model.model.layers, language_model.model.norm
        self.lm_head, self.action_rows = language_model.lm_head, action_rows
        self.num_decode_steps = num_decode_steps
        self.device, self.dtype = self.lm_head.weight.device, self.lm_head.weight.dtype
        self.use_graphs = self.device.type == "cuda"
        self.config = language_model.config
        self.shapes: dict = {}  # (batch bucket, prompt tokens) -> StaticShapes or CapturedShapes
        self.cache_capacity = 0
        self.cache_keys: list = []
        self.cache_values: list = []
        self.pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self.current = None  # the shapes act is using: StaticShapes or CapturedShapes
        self.replay_differences: dict = {}  # (batch bucket, prompt tokens) -> replay_difference of its graphs
        self.static: Optional[StaticShapes] = None  # their buffers
        self.batch = 0

    def action_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        # The whole output layer, as PEFT's "all-linear" adapts it too; on one position per row it costs little.
        return self.lm_head(hidden)[..., self.action_rows]

    def cache_views(self, batch: int, length: int) -> StaticKVCache:
        """Contiguous (batch, heads, length, head_dim) views of one flat buffer per layer, shared by every shape.
        A shape larger than the buffers reallocates them, and the shapes built on the old ones are dropped."""
        heads = self.config.num_key_value_heads or self.config.num_attention_heads
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        size = batch * heads * length * head_dim
        if size > self.cache_capacity:
            self.shapes.clear()
            self.cache_keys = self.cache_values = []  # release the old buffers before allocating new ones
            make = lambda: torch.zeros(size, dtype=self.dtype, device=self.device)  # noqa: E731
            self.cache_keys = [make() for _ in self.layers]
            self.cache_values = [make() for _ in self.layers]
            self.cache_capacity = size
        shape = (batch, heads, length, head_dim)
        view = lambda flat: flat[:size].view(shape)  # noqa: E731
        return StaticKVCache([view(k) for k in self.cache_keys], [view(v) for v in self.cache_values])

    def shapes_for(self, batch: int, text_length: int, image_shape: tuple):
        key = (batch, text_length)
        if key not in self.shapes:
            num_patches = self.num_patches(image_shape)
            shapes = StaticShapes(self, batch, text_length, num_patches, image_shape)
            self.shapes[key] = self.capture(shapes) if self.use_graphs else shapes
        return self.shapes[key]

    def capture(self, shapes: StaticShapes):
        """CapturedShapes, or where the capture fails (an operation CUDA graphs cannot hold, in some other library
        version) the same functions without graphs, from here on, with one warning: slower, never wrong."""
        try:
            return CapturedShapes(shapes, self.pool)
        except torch.cuda.OutOfMemoryError:
            raise  # not the capture's doing: the step would not fit without graphs either
        except RuntimeError as error:
            torch.cuda.synchronize(self.device)
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            self.stop_graphs(f"the policy step could not be captured as a CUDA graph ({reason})")
            return shapes

    def checked(self, key: tuple, captured: CapturedShapes):
        """The captured shapes once their first replay, on real inputs, gave what their functions give without
        graphs (replay_difference); else those functions, and no graphs from here on, with one warning."""
        difference = replay_difference(captured.shapes, captured, self.num_decode_steps, self.action_rows.start)
        torch.cuda.empty_cache()  # the run without graphs left activations outside the graphs' pool
        captured.checked, self.replay_differences[key] = True, difference
        if difference <= REPLAY_TOLERANCE:
            return captured
        self.stop_graphs(
            f"the CUDA graphs of the policy step at batch {key[0]}, {key[1]} prompt tokens replay logits "
            f"{difference:.1%} off the same step without graphs (at most {REPLAY_TOLERANCE:.0%} allowed)"
        )
        return self.shapes[key]

    def stop_graphs(self, reason: str) -> None:
        """Static shapes without graphs from here on: slower, never wrong."""
        print(
            f"[openvla_policy] warning: {reason}; it runs at static shapes without graphs from here on "
            "(--no-cuda-graphs runs the eager step)",
            flush=True,
        )
        self.use_graphs = False
        self.shapes = {key: uncaptured(shapes) for key, shapes in self.shapes.items()}

    @torch.no_grad()
    def num_patches(self, image_shape: tuple) -> int:
        pixels = torch.zeros(1, *image_shape, dtype=self.dtype, device=self.device)
        return self.vla.projector(self.vla.vision_backbone(pixels)).shape[1]

    @torch.no_grad()
    def start(self, inputs: dict, lengths: torch.Tensor) -> torch.Tensor:
        input_ids, mask, pixels = inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"]
        batch, text_length = input_ids.shape
        bucket = batch_bucket(batch)
        key = (bucket, prompt_bucket(text_length))
        shapes = self.shapes_for(*key, tuple(pixels.shape[1:]))
        static = uncaptured(shapes)
        # Rows past the batch repeat its first one (real inputs: no NaNs); their outputs are dropped.
        fill = torch.zeros(bucket, dtype=torch.long, device=input_ids.device)
        fill[:batch] = torch.arange(batch, device=input_ids.device)
        static.input_ids.zero_()
        static.input_mask.zero_()
        static.input_ids[:, :text_length] = input_ids[fill]
        static.input_mask[:, :text_length] = mask[fill]
        static.input_pixels.copy_(pixels[fill])
        static.input_lengths.copy_(lengths[fill])
        static.decode_step.zero_()
        if isinstance(shapes, CapturedShapes) and not shapes.checked:
            shapes = self.checked(key, shapes)
        self.current, self.static, self.batch = shapes, static, batch
        return shapes.prefill()[:batch]

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor, k: int) -> torch.Tensor:
        self.static.token[: self.batch] = tokens
        self.static.decode_step.fill_(k)
        return self.current.decode()[: self.batch]
