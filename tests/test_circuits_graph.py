"""The circuit graph: counts, index layout, names."""

import pytest
import torch

from saelab.circuits.graph import CHANNELS, Edge, Graph, Node, Receiver, head_node, mlp_node


def test_gpt2_small_shaped_graph_has_32491_edges():
    graph = Graph(n_layers=12, n_heads=12, has_mlps=True)
    assert len(graph.senders) == 1 + 144 + 12
    assert len(graph.receivers) == 3 * 144 + 12 + 1
    assert graph.n_edges == 32491
    assert len(graph.heads) == 144


def test_attention_only_graph_counts():
    graph = Graph(n_layers=4, n_heads=8, has_mlps=False)
    # head receivers at layer l read the input and 8 l earlier heads; logits read everything
    expected = sum(3 * 8 * (1 + 8 * layer) for layer in range(4)) + 1 + 32
    assert graph.n_edges == expected
    with pytest.raises(ValueError, match="attention-only"):
        graph.mlp_sender(0)


def test_index_helpers_agree_with_sender_and_receiver_lists():
    graph = Graph(n_layers=3, n_heads=2, has_mlps=True)
    for layer in range(3):
        assert [n.name for n in graph.senders[graph.head_senders(layer)]] == [f"{layer}.0", f"{layer}.1"]
        assert graph.senders[graph.mlp_sender(layer)] == mlp_node(layer)
        for channel in CHANNELS:
            receivers = graph.receivers[graph.head_receivers(layer, channel)]
            assert [r.name for r in receivers] == [f"{layer}.0.{channel}", f"{layer}.1.{channel}"]
        assert graph.receivers[graph.mlp_receiver(layer)] == Receiver(mlp_node(layer))
    assert graph.receivers[graph.logits_receiver].name == "logits"


def test_edges_respect_the_forward_order():
    graph = Graph(n_layers=2, n_heads=2, has_mlps=True)
    names = {e.name for e in graph.edges}
    assert "0.0->mlp0" in names and "mlp0->1.1.k" in names and "input->logits" in names
    assert "0.0->0.1.q" not in names and "mlp0->mlp0" not in names and "1.0->0.0.v" not in names
    parallel = Graph(n_layers=2, n_heads=2, has_mlps=True, parallel_attn_mlp=True)
    assert "0.0->mlp0" not in {e.name for e in parallel.edges}


def test_node_names_round_trip_and_reject_garbage():
    for text in ("input", "logits", "3.7", "mlp2"):
        assert Node.parse(text, n_layers=4).name == text
    with pytest.raises(ValueError, match="bad node name"):
        Node.parse("head3", n_layers=4)
    with pytest.raises(ValueError):
        Receiver(head_node(0, 0))  # a head receiver needs a channel
    assert Edge(head_node(0, 1), Receiver(head_node(1, 0), "v")).name == "0.1->1.0.v"


def test_out_edges_mask_is_one_row_of_the_edge_mask():
    graph = Graph(n_layers=2, n_heads=3, has_mlps=True)
    node = head_node(0, 2)
    mask = graph.out_edges(node)
    assert torch.equal(mask[graph.sender_index[node]], graph.edge_mask[graph.sender_index[node]])
    assert int(mask.sum()) == int(graph.edge_mask[graph.sender_index[node]].sum())
