"""The computational graph circuit methods score: input → heads (q/k/v receivers) and MLPs → logits.

As in ACDC and EAP, a *sender* is a node writing into the residual stream (the embeddings, each attention
head's z·W_O, each MLP's output) and a *receiver* is a place reading it (each head's query, key and value
input, each MLP's input, the unembedding). An edge connects a sender to every receiver later in the forward
pass. GPT-2 small (12 layers, 12 heads) has 157 senders, 445 receivers and 32,491 edges.
"""

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
from jaxtyping import Bool
from torch import Tensor

NodeKind = Literal["input", "head", "mlp", "logits"]
Channel = Literal["q", "k", "v"]
CHANNELS: tuple[Channel, ...] = ("q", "k", "v")

_HEAD_NAMES = (re.compile(r"(\d+)\.(\d+)"), re.compile(r"a(\d+)\.h(\d+)"), re.compile(r"[Ll](\d+)[Hh](\d+)"))
"""A head's name: ours ("L.H") first, then other tools' (ACDC's "a{L}.h{H}", and "L{L}H{H}")."""
_MLP_NAME = re.compile(r"mlp(\d+)")
_CHANNEL = re.compile(r"(.+)\.[qkv]")
"""A head receiver's name: its head's name and ".q", ".k" or ".v"."""


@dataclass(frozen=True, order=True)
class Node:
    """A component of the model: the embeddings ("input"), a head "L.H", an MLP "mlpL", or "logits"."""

    layer: int
    """Block index; -1 for the input and n_layers for the logits (sorting follows the forward pass)."""
    kind: NodeKind
    """Which sort of component."""
    head: int | None = None
    """Head index for kind "head", else None."""

    def __post_init__(self) -> None:
        if (self.kind == "head") != (self.head is not None):
            raise ValueError(
                f"node of kind {self.kind!r} with head {self.head!r}: only heads have a head index"
            )

    @property
    def name(self) -> str:
        if self.kind == "head":
            return f"{self.layer}.{self.head}"
        if self.kind == "mlp":
            return f"mlp{self.layer}"
        return self.kind

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: str, n_layers: int) -> "Node":
        """ "input", "logits", "L.H" or "mlpL" → Node; ValueError naming the text otherwise."""
        node = find_node(text, n_layers)
        if node is None or node.name != text:
            raise ValueError(f"bad node name {text!r}: write 'input', 'logits', 'L.H' (a head) or 'mlpL'")
        return node


def head_of_name(text: str) -> tuple[int, int] | None:
    """(layer, head) named by a head's or a head receiver's name ("L.H", "L.H.q", "a{L}.h{H}", "L{L}H{H}");
    None for other names."""
    text = text.strip()
    if match := _CHANNEL.fullmatch(text):
        text = match.group(1)
    for form in _HEAD_NAMES:
        if match := form.fullmatch(text):
            return int(match.group(1)), int(match.group(2))
    return None


def find_node(text: str, n_layers: int) -> Node | None:
    """The node a name stands for: a node's name, a receiver's (its node) or another tool's head name (see
    `head_of_name`); None for names it does not know. `Node.parse` accepts only the node names we write."""
    text = text.strip()
    if text in ("input", "logits"):
        return input_node() if text == "input" else logits_node(n_layers)
    if head := head_of_name(text):
        return head_node(*head)
    if match := _MLP_NAME.fullmatch(text):
        return mlp_node(int(match.group(1)))
    return None


def input_node() -> Node:
    return Node(-1, "input")


def logits_node(n_layers: int) -> Node:
    return Node(n_layers, "logits")


def head_node(layer: int, head: int) -> Node:
    return Node(layer, "head", head)


def mlp_node(layer: int) -> Node:
    return Node(layer, "mlp")


@dataclass(frozen=True, order=True)
class Receiver:
    """Where a node reads the residual stream: a head's q, k or v input, an MLP's input, the logits."""

    node: Node
    channel: Channel | None = None
    """"q", "k" or "v" for heads; None for MLPs and logits."""

    def __post_init__(self) -> None:
        if (self.node.kind == "head") != (self.channel is not None):
            raise ValueError(
                f"receiver {self.node.name!r} with channel {self.channel!r}: only heads have q/k/v"
            )
        if self.node.kind == "input":
            raise ValueError("the input node reads nothing and cannot be a receiver")

    @property
    def name(self) -> str:
        return f"{self.node.name}.{self.channel}" if self.channel else self.node.name

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, order=True)
class Edge:
    """A sender's output as read by one receiver."""

    sender: Node
    receiver: Receiver

    @property
    def name(self) -> str:
        return f"{self.sender.name}->{self.receiver.name}"

    def __str__(self) -> str:
        return self.name


def _sender_order(node: Node, parallel: bool) -> int:
    """Position in the forward pass at which a sender's output exists (larger is later)."""
    if node.kind == "input":
        return -1
    return 2 * node.layer + (1 if node.kind == "mlp" and not parallel else 0)


def _receiver_order(receiver: Receiver, parallel: bool) -> int:
    """Position in the forward pass at which a receiver reads the residual stream."""
    node = receiver.node
    if node.kind == "logits":
        return 2 * node.layer
    return 2 * node.layer + (1 if node.kind == "mlp" and not parallel else 0)


@dataclass(frozen=True, eq=False)
class Graph:
    """Senders, receivers and which (sender, receiver) pairs are edges, for one model shape."""

    n_layers: int
    n_heads: int
    has_mlps: bool
    """False for attention-only models."""
    parallel_attn_mlp: bool = False
    """GPT-J style blocks: the MLP reads the block's input, not the attention output."""

    def __post_init__(self) -> None:
        if self.n_layers < 1 or self.n_heads < 1:
            raise ValueError(
                f"a graph needs ≥ 1 layer and head, got {self.n_layers} layers, {self.n_heads} heads"
            )

    @classmethod
    def from_config(cls, cfg) -> "Graph":
        """The graph of a TransformerLens `HookedTransformerConfig`."""
        return cls(cfg.n_layers, cfg.n_heads, not cfg.attn_only, bool(cfg.parallel_attn_mlp))

    @cached_property
    def senders(self) -> tuple[Node, ...]:
        """input, then per layer its heads and its MLP."""
        nodes = [input_node()]
        for layer in range(self.n_layers):
            nodes += [head_node(layer, h) for h in range(self.n_heads)]
            nodes += [mlp_node(layer)] if self.has_mlps else []
        return tuple(nodes)

    @cached_property
    def receivers(self) -> tuple[Receiver, ...]:
        """Per layer: q of every head, then k, then v, then the MLP; finally the logits."""
        out = []
        for layer in range(self.n_layers):
            for channel in CHANNELS:
                out += [Receiver(head_node(layer, h), channel) for h in range(self.n_heads)]
            out += [Receiver(mlp_node(layer))] if self.has_mlps else []
        out.append(Receiver(logits_node(self.n_layers)))
        return tuple(out)

    @cached_property
    def edge_mask(self) -> Bool[Tensor, "n_senders n_receivers"]:
        """True where the sender's output exists before the receiver reads the stream."""
        s = torch.tensor([_sender_order(n, self.parallel_attn_mlp) for n in self.senders])
        r = torch.tensor([_receiver_order(x, self.parallel_attn_mlp) for x in self.receivers])
        return s[:, None] < r[None, :]

    @cached_property
    def sender_index(self) -> dict[Node, int]:
        return {node: i for i, node in enumerate(self.senders)}

    @cached_property
    def receiver_index(self) -> dict[Receiver, int]:
        return {receiver: i for i, receiver in enumerate(self.receivers)}

    @cached_property
    def edges(self) -> tuple[Edge, ...]:
        """Every edge, sender-major, in the order of `edge_mask.nonzero()`."""
        pairs = self.edge_mask.nonzero().tolist()
        return tuple(Edge(self.senders[s], self.receivers[r]) for s, r in pairs)

    @property
    def n_edges(self) -> int:
        return int(self.edge_mask.sum())

    @property
    def heads(self) -> tuple[Node, ...]:
        return tuple(n for n in self.senders if n.kind == "head")

    @property
    def nodes(self) -> tuple[Node, ...]:
        """Every head and MLP (the nodes circuit methods score), in forward order."""
        return tuple(n for n in self.senders if n.kind in ("head", "mlp"))

    def head_senders(self, layer: int) -> slice:
        """Sender indices of layer `layer`'s heads."""
        start = 1 + layer * (self.n_heads + int(self.has_mlps))
        return slice(start, start + self.n_heads)

    def mlp_sender(self, layer: int) -> int:
        if not self.has_mlps:
            raise ValueError("the model is attention-only: it has no MLP senders")
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    def head_receivers(self, layer: int, channel: Channel) -> slice:
        """Receiver indices of layer `layer`'s heads reading through `channel`."""
        start = layer * (3 * self.n_heads + int(self.has_mlps)) + CHANNELS.index(channel) * self.n_heads
        return slice(start, start + self.n_heads)

    def mlp_receiver(self, layer: int) -> int:
        if not self.has_mlps:
            raise ValueError("the model is attention-only: it has no MLP receivers")
        return layer * (3 * self.n_heads + 1) + 3 * self.n_heads

    @property
    def logits_receiver(self) -> int:
        return len(self.receivers) - 1

    def out_edges(self, node: Node) -> Bool[Tensor, "n_senders n_receivers"]:
        """Mask of the node's outgoing edges (ablating them all = patching the node's output)."""
        mask = torch.zeros_like(self.edge_mask)
        mask[self.sender_index[node]] = self.edge_mask[self.sender_index[node]]
        return mask

    def edge(self, name: str) -> Edge:
        """The edge called "SENDER->RECEIVER" (e.g. "0.1->1.2.v"); ValueError if the graph lacks it."""
        if name not in self._edge_by_name:
            raise ValueError(f"no edge {name!r} in this graph; write SENDER->RECEIVER, e.g. 'input->0.0.q'")
        return self._edge_by_name[name]

    @cached_property
    def _edge_by_name(self) -> dict[str, Edge]:
        return {e.name: e for e in self.edges}
