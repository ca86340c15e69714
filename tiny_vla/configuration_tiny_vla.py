"""Configuration of the tiny test VLA (remote code; copied next to its weights by `build_tiny_vla`).

It mirrors the fields of OpenVLA's config that callers read: a Llama `text_config`, `n_action_bins`,
`pad_to_multiple_of` and `norm_stats`. `OpenVLAShapedConfig` is the same model at OpenVLA-7B's sizes.
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
        timm_model_ids=None,
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
        # None: the tiny one-block vision backbone. Two timm model ids: OpenVLA's fused backbone (built without
        # pretrained weights), whose two feature vectors per patch are concatenated.
        self.timm_model_ids = list(timm_model_ids) if timm_model_ids else None
        # The default (True) would make `tie_weights` tie lm_head to the input embeddings: Llama-2 does not.
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class OpenVLAShapedConfig(TinyVLAConfig):
    """The same model at OpenVLA-7B's sizes. A model type other than "tiny_vla", so that `openvla_policy.load_vla`
    treats it like the real checkpoint: CUDA only, bf16, flash-attention when installed."""

    model_type = "openvla_shaped"
