"""Build a VLA checkpoint directory: python -m tiny_vla --preset {tiny,openvla-7b} --out <dir>"""

from dataclasses import dataclass
from typing import Literal

import tyro

from .build import build_openvla_shaped, build_tiny_vla


@dataclass
class Args:
    out: str
    """directory to write the checkpoint into (replaced if it exists)"""
    preset: Literal["tiny", "openvla-7b"] = "tiny"
    """tiny: the 5.5M-parameter test VLA; openvla-7b: OpenVLA-7B's shapes with random bf16 weights (15 GB)"""
    seed: int = 0
    """seed of the random weights"""
    device: str = "cpu"
    """where the openvla-7b preset draws its random weights (cuda is faster; the files are the same size)"""


if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.preset == "tiny":
        path = build_tiny_vla(args.out, seed=args.seed)
    else:
        path = build_openvla_shaped(args.out, seed=args.seed, device=args.device)
    print(f"[tiny_vla] {args.preset} written to {path}")
