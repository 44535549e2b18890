"""Embeddings shared by Yan-Sim and Yan-Gen: the action encoder.

The seed: "Action signals processed by a MLP layer to generate an action token (Dim=768)". Both the Sim UNet
(action cross-attention in every block) and the Gen DiT (the decoupled action cross-attention branch) use
this module, so an action space trained for one can be reused by the other.
"""

import torch
from torch import nn


class YanActionEncoder(nn.Module):
    """MLP from an encoded action vector to ``num_tokens`` action tokens of width ``embed_dim``.

    Args:
        action_dim: length of an encoded action (``ActionSpace.dim``: buttons + continuous axes).
        embed_dim: width of each action token (768 in the paper).
        num_tokens: tokens per action. One is the paper's choice; more give cross-attention more to attend to.
        hidden_dim: MLP width, ``embed_dim`` when ``None``.

    Shapes: ``actions [..., action_dim]`` -> ``tokens [..., num_tokens, embed_dim]``.
    """

    def __init__(self, action_dim: int, embed_dim: int = 768, num_tokens: int = 1, hidden_dim: int | None = None):
        super().__init__()
        if action_dim < 1 or embed_dim < 1 or num_tokens < 1:
            raise ValueError(
                f"action_dim, embed_dim and num_tokens must be >= 1, got {action_dim}, {embed_dim}, {num_tokens}."
            )
        hidden_dim = hidden_dim or embed_dim
        self.action_dim = action_dim
        self.embed_dim = embed_dim
        self.num_tokens = num_tokens
        self.mlp = nn.Sequential(
            nn.Linear(action_dim, hidden_dim),
            nn.SiLU(),
            nn.Linear(hidden_dim, num_tokens * embed_dim),
        )
        # a learned position per token, so several tokens of one action are distinguishable
        self.token_embedding = nn.Parameter(torch.zeros(num_tokens, embed_dim))
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        if actions.shape[-1] != self.action_dim:
            raise ValueError(
                f"`actions` must end in the action dimension {self.action_dim}, got shape {tuple(actions.shape)}."
            )
        x = self.mlp(actions.to(self.mlp[0].weight.dtype))
        x = x.unflatten(-1, (self.num_tokens, self.embed_dim)) + self.token_embedding
        return self.norm(x)
