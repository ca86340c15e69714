"""Tiny VLA with OpenVLA's model contract (remote code; copied next to its weights by `build_tiny_vla`).

Like `OpenVLAForActionPrediction`, the forward embeds the prompt, inserts the projected image patches
right after BOS and runs a Llama on the result, so the logits are `num_patches` longer than `input_ids`.
The language model stays reachable as `.language_model` for batched cached decoding. With `timm_model_ids`
in the config, the vision side is OpenVLA's instead of the tiny one: two timm towers whose second-to-last
block's patch tokens are concatenated, and OpenVLA's three-layer projector (`OpenVLAShapedForActionPrediction`).
"""

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import LlamaForCausalLM, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_tiny_vla import OpenVLAShapedConfig, TinyVLAConfig

IGNORE_INDEX = -100


class TinyVisionBackbone(nn.Module):
    """(B, 6, H, W) fused-normalization pixels -> (B, P, D) patch features: patch embedding + one block."""

    def __init__(self, config: TinyVLAConfig):
        super().__init__()
        width, self.heads = config.vision_width, 4
        self.patch_embed = nn.Conv2d(6, width, kernel_size=config.patch_size, stride=config.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches, width))
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)
        self.norm_out = nn.LayerNorm(width)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixel_values).flatten(2).transpose(1, 2) + self.pos_embed
        b, p, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, p, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, p, d))
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.norm_out(x)


class TinyProjector(nn.Module):
    """Patch features -> LLM embedding width."""

    def __init__(self, vision_width: int, llm_width: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_width, llm_width)
        self.fc2 = nn.Linear(llm_width, llm_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ChannelScale(nn.Module):
    """timm's LayerScale (x * gamma) with the parameter renamed: transformers' loader renames every checkpoint key
    containing "gamma" to "weight", so a parameter named gamma would silently stay unloaded."""

    def __init__(self, gamma: torch.Tensor):
        super().__init__()
        self.scale = nn.Parameter(gamma.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def random_timm_tower(model_id: str, image_size: int) -> nn.Module:
    import timm  # only the OpenVLA-shaped backbone needs timm

    tower = timm.create_model(model_id, pretrained=False, num_classes=0, img_size=image_size)
    for module in list(tower.modules()):
        for name, child in list(module.named_children()):
            if type(child).__name__ == "LayerScale":
                setattr(module, name, ChannelScale(child.gamma))
    return tower


class FusedTimmBackbone(nn.Module):
    """(B, 6, H, W) -> (B, P, D1 + D2): channels 0-2 go through the first tower, 3-5 through the second.

    Like OpenVLA, each tower's features are the patch tokens (prefix tokens dropped) after its second-to-last
    block; timm 0.9's `get_intermediate_layers` still runs every block, so the compute is OpenVLA's too.
    """

    def __init__(self, config: TinyVLAConfig):
        super().__init__()
        first_id, second_id = config.timm_model_ids
        self.featurizer = random_timm_tower(first_id, config.image_size)
        self.fused_featurizer = random_timm_tower(second_id, config.image_size)
        self.embed_dim = self.featurizer.embed_dim + self.fused_featurizer.embed_dim

    @staticmethod
    def penultimate_patches(tower: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        return tower.get_intermediate_layers(pixels, n={len(tower.blocks) - 2})[0]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        first, second = torch.split(pixel_values, [3, 3], dim=1)
        patches = self.penultimate_patches(self.featurizer, first)
        fused_patches = self.penultimate_patches(self.fused_featurizer, second)
        return torch.cat([patches, fused_patches], dim=2)


class FusedProjector(nn.Module):
    """OpenVLA's projector for a fused backbone: D -> 4D -> LLM width -> LLM width, GELU between."""

    def __init__(self, vision_width: int, llm_width: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_width, 4 * vision_width)
        self.fc2 = nn.Linear(4 * vision_width, llm_width)
        self.fc3 = nn.Linear(llm_width, llm_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(x)))))


class TinyVLAForActionPrediction(PreTrainedModel):
    config_class = TinyVLAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TinyVisionBackbone", "TinyProjector", "FusedTimmBackbone", "FusedProjector"]
    _no_split_modules += ["LlamaDecoderLayer"]
    _skip_keys_device_placement = "past_key_values"
    _supports_flash_attn_2 = True
    _supports_sdpa = True

    def __init__(self, config: TinyVLAConfig):
        super().__init__(config)
        if config.timm_model_ids:
            self.vision_backbone = FusedTimmBackbone(config)
            self.projector = FusedProjector(self.vision_backbone.embed_dim, config.text_config.hidden_size)
        else:
            self.vision_backbone = TinyVisionBackbone(config)
            self.projector = TinyProjector(config.vision_width, config.text_config.hidden_size)
        self.language_model = LlamaForCausalLM._from_config(
            config.text_config, attn_implementation=config._attn_implementation
        )
        self.norm_stats = config.norm_stats
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = 0.02
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, TinyVisionBackbone):
            module.pos_embed.data.normal_(mean=0.0, std=std)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        pixel_values: Optional[torch.FloatTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        past_key_values=None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        common = dict(
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        if past_key_values is not None:
            # Cached generation, with upstream's restrictions: one new token, batch size 1, mask ignored.
            # Batched cached decoding goes through `self.language_model` directly.
            if input_ids is None or input_ids.shape[1] != 1 or input_ids.shape[0] != 1 or labels is not None:
                raise ValueError("Cached generation supports one new token at batch size 1 only")
            out = self.language_model(input_ids=input_ids, past_key_values=past_key_values, **common)
        elif pixel_values is None:
            out = self.language_model(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, labels=labels, **common
            )
        else:
            if input_ids is None or input_ids.shape[0] != pixel_values.shape[0]:
                raise ValueError("Multimodal forward needs input_ids with the same batch size as pixel_values")
            patches = self.projector(self.vision_backbone(pixel_values))
            n = patches.shape[1]
            embeds = self.get_input_embeddings()(input_ids)
            embeds = torch.cat([embeds[:, :1], patches.to(embeds.dtype), embeds[:, 1:]], dim=1)
            if attention_mask is not None:
                ones = attention_mask.new_ones(attention_mask.shape[0], n)
                attention_mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)
            if labels is not None:
                ignore = labels.new_full((labels.shape[0], n), IGNORE_INDEX)
                labels = torch.cat([labels[:, :1], ignore, labels[:, 1:]], dim=1)
            out = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, **common)

        out = CausalLMOutputWithPast(
            loss=out.loss,
            logits=out.logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        return out if return_dict else out.to_tuple()

    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, pixel_values=None, **kwargs
    ) -> dict:
        """Lets `generate()` work at batch size 1, like upstream: prefill with the image, then one token at a time."""
        if past_key_values is not None:
            return {"input_ids": input_ids[:, -1:], "past_key_values": past_key_values, "use_cache": True}
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": pixel_values,
            "use_cache": kwargs.get("use_cache"),
        }


class OpenVLAShapedForActionPrediction(TinyVLAForActionPrediction):
    """The same model class bound to `OpenVLAShapedConfig` (OpenVLA-7B's sizes, random weights)."""

    config_class = OpenVLAShapedConfig
