"""The parts of an OpenVLA (Prismatic) model that the policy step and the scoring pass call one by one.

OpenVLA's forward embeds the prompt, inserts the projected image patches after BOS, and runs the Llama model and
its output layer on every position. The fast step and `VLAPolicy.log_prob` run the same modules in the same order
and stop short of the output layer, which they apply only where an action token is predicted.
"""

import torch


def base_vla(model):
    """The VLA itself: under a PEFT wrapper its base model, whose layers hold the LoRA layers."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def after_bos(sequence: torch.Tensor, inserted: torch.Tensor) -> torch.Tensor:
    """`inserted` (B, n, ...) placed after each row's first token, where the VLA puts its image patches."""
    return torch.cat([sequence[:, :1], inserted, sequence[:, 1:]], dim=1)


def multimodal_mask(attention_mask: torch.Tensor, num_patches: int) -> torch.Tensor:
    """The prompt's attention mask with the image patches (always attended) after BOS."""
    return after_bos(attention_mask, attention_mask.new_ones(len(attention_mask), num_patches))


def multimodal_embeddings(vla, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, patches + tokens, hidden): the prompt's embeddings with the image patches after BOS."""
    patches = vla.projector(vla.vision_backbone(pixel_values))
    embeds = vla.get_input_embeddings()(input_ids)
    return after_bos(embeds, patches.to(embeds.dtype))
