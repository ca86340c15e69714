"""Configuration of the tiny test VLA (remote code; copied next to its weights by `build_tiny_vla`).

It mirrors the fields of OpenVLA's config that callers read: a Llama `text_config`, `n_action_bins`,
`pad_to_multiple_of` and `norm_stats`.
"""

from transformers import LlamaConfig, PretrainedConfig

# Llama-2 sized vocabulary (32000 base ids + <PAD>, padded to a multiple of 64) on a 2-layer, 64-wide body.
DEFAULT_TEXT_CONFIG = dict(
    vocab_size=32064,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=1024,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=32000,
    tie_word_embeddings=False,
)


class TinyVLAConfig(PretrainedConfig):
    model_type = "tiny_vla"
    is_composition = False

    def __init__(
        self,
        text_config=None,
        image_size: int = 224,
        patch_size: int = 56,
        vision_width: int = 64,
        n_action_bins: int = 256,
        pad_to_multiple_of: int = 64,
        norm_stats=None,
        pad_token_id: int = 32000,
        **kwargs,
    ):
        if isinstance(text_config, LlamaConfig):
            self.text_config = text_config
        else:
            self.text_config = LlamaConfig(**{**DEFAULT_TEXT_CONFIG, **(text_config or {})})
        self.image_size = image_size
        self.patch_size = patch_size
        self.vision_width = vision_width
        self.n_action_bins = n_action_bins
        self.pad_to_multiple_of = pad_to_multiple_of
        self.norm_stats = norm_stats or {}
        # The default (True) would make `tie_weights` tie lm_head to the input embeddings: Llama-2 does not.
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2
