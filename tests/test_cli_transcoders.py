"""Transcoders through the workbench: `saelab train --arch transcoder` with IN:OUT site pairs, caching both sites
of a pair, the store's rows, and core metrics with the transcoder spliced in place of the MLP output."""

import argparse

import pytest
import torch
import torch.nn.functional as F

from saelab.activations import HookSite
from saelab.cli import main
from saelab.db import ResultsStore
from saelab.evals.core import CoreEvalConfig, evaluate_core, keep_mask
from saelab.evals.splice import flat_acts
from saelab.sae import SAE, SAEConfig, load_sae

IN, OUT = "1.resid_mid", "1.mlp_out"


def parsed(*flags: str):
    from saelab.cli.train import _arguments, spec_from_args

    parser = argparse.ArgumentParser()
    _arguments(parser)
    return spec_from_args(parser.parse_args(["--model", "saelab-random", *flags]))


def test_arch_transcoder_takes_site_pairs_and_skip_transcoder_adds_the_skip_term():
    from saelab.workflows.train import sae_id_of

    spec = parsed("--arch", "transcoder,skip_transcoder,jumprelu", "--sites", f"{IN}:{OUT},0.resid_mid:0.mlp_out",
                  "--width", "64", "--k", "8")
    entries = {(e.site, e.output_site, e.architecture, e.skip_connection) for e in spec.saes}
    assert entries == {(site, out, arch, skip) for site, out in ((IN, OUT), ("0.resid_mid", "0.mlp_out"))
                       for arch, skip in (("topk", False), ("topk", True), ("jumprelu", False))}
    ids = {sae_id_of(e, spec.run_hash) for e in spec.saes}
    assert f"{IN}-to-{OUT}-topk-skip-w64-k8" in " ".join(ids) and len(ids) == 6
    # an SAE keeps the id and run hash it had before transcoders existed (values computed at main 778d241)
    sae_spec = parsed("--sites", "1.resid_post", "--width", "64", "--tokens", "2M", "--batch-size", "4096")
    assert sae_id_of(sae_spec.saes[0], "run") == "1.resid_post-topk-w64-k32-a9b72c"
    assert sae_spec.run_hash == "8c1799ac34"


def test_help_lists_the_transcoder_archs(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "transcoder" in help_text and "skip_transcoder" in help_text and "IN:OUT" in help_text


@pytest.mark.parametrize("flags, code, message", [
    (["--arch", "transcoder", "--sites", "1.resid_mid"], 2, "--arch transcoder needs IN:OUT site pairs"),
    (["--arch", "vq", "--sites", "1.resid_mid:1.mlp_out"], 2, "'vq' cannot be a transcoder"),
    (["--sites", "1.resid_mid:1.resid_mid"], 1, "reads and reconstructs the same site"),
    (["--sites", "1.resid_mid:1.nosuch"], 1, "bad hook site '1.nosuch'"),
    (["--sites", "1.resid_mid:"], 1, "bad site pair '1.resid_mid:'"),
    (["--sites", "1.resid_mid:1.mlp_out:2.mlp_out"], 1, "bad site pair"),
    (["--sites", "1.resid_mid:1.mlp_out,1.resid_mid:1.mlp_out"], 1, "listed twice"),
])
def test_a_bad_pair_is_one_line_before_the_model_loads(tmp_path, capsys, monkeypatch, flags, code, message):
    """Flags that do not go together are usage errors (exit 2, like an unknown --arch); a bad site or pair is a
    bad value (exit 1, like a bad site of `saelab cache`)."""
    import saelab.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before --sites was checked")

    monkeypatch.setattr(saelab.models, "load_model", no_model)
    assert main(["train", *flags, "--workspace", str(tmp_path)]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "saelab.duckdb").exists()


def test_cache_refuses_a_bad_pair_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import saelab.models

    monkeypatch.setattr(saelab.models, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    assert main(["cache", "--sites", "1.resid_mid:1.resid_mid", "--workspace", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reads and reconstructs the same site" in err, err


# ---------------------------------------------------------------- the eval splice against hand-written hooks


@pytest.fixture(scope="module")
def tokens(random_tokens):
    return random_tokens


def random_transcoder(model, skip: bool) -> SAE:
    d = model.cfg.d_model
    tc = SAE(SAEConfig("topk", d, 64, k=8, hook_site=IN, output_site=OUT, skip_connection=skip, seed=3))
    with torch.no_grad():
        tc.b_dec.normal_(0, 0.1)
        if skip:
            tc.W_skip.normal_(0, 0.05)
    return tc


@pytest.mark.parametrize("skip", [False, True])
def test_the_eval_splice_equals_hand_written_hook_code(random_model, tokens, skip):
    model, tc = random_model, random_transcoder(random_model, skip)
    m = evaluate_core(model, tc, tokens, CoreEvalConfig(batch_size=2))
    keep = keep_mask(tokens, model.tokenizer.bos_token_id, True)
    read: dict[str, torch.Tensor] = {}

    def capture(tensor, hook):
        read["x"] = tensor

    def splice(tensor, hook):  # the transcoder's reconstruction of the input read in this same forward pass
        y_hat = tc.reconstruct(read["x"].flatten(0, 1)).view_as(tensor)
        read["y"] = tensor.clone()
        return torch.where(keep[..., None], y_hat, tensor)

    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_mid", capture),
                                                         ("blocks.1.hook_mlp_out", splice)])
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        clean = F.cross_entropy(model(tokens)[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        y, y_hat = read["y"][keep], tc.reconstruct(read["x"][keep])
    assert m.ce_spliced == pytest.approx(float(ce), rel=1e-5)
    assert m.ce_clean == pytest.approx(float(clean), rel=1e-5) and m.ce_spliced != pytest.approx(m.ce_clean)
    fvu = float((y_hat - y).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
    assert m.fvu == pytest.approx(fvu, rel=1e-4)
    assert m.ce_with_error == pytest.approx(m.ce_clean, abs=1e-5)
    # zero-ablation is of the MLP output (the target), not of the transcoder's input
    with torch.no_grad():
        zeroed = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_mlp_out",
                                                          lambda t, hook: torch.where(keep[..., None], 0 * t, t))])
    zero_ce = F.cross_entropy(zeroed[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    assert m.ce_zero_ablation == pytest.approx(float(zero_ce), rel=1e-5)


def test_a_transcoder_whose_output_site_does_not_fit_the_model_is_refused(random_model, tokens):
    tc = SAE(SAEConfig("topk", random_model.cfg.d_model, 64, k=8, d_out=7, hook_site=IN, output_site=OUT))
    with pytest.raises(ValueError, match="output site '1.mlp_out' is .* wide in this model, but the transcoder's"):
        evaluate_core(random_model, tc, tokens, CoreEvalConfig(batch_size=2))


# ---------------------------------------------------------------- cache, train, store, eval end to end


def write_corpus(folder):
    folder.mkdir()
    for i in range(3):
        (folder / f"doc{i}.py").write_text("".join(f"def f{i}_{j}(x):\n    return x * {j}\n" for j in range(80)))
    return folder


@pytest.mark.slow
def test_cache_train_and_eval_transcoders_from_the_cli(tmp_path, capsys):
    ws, corpus = tmp_path / "ws", write_corpus(tmp_path / "corpus")
    common = ["--model", "saelab-random", "--workspace", str(ws)]
    assert main(["cache", *common, "--sites", f"{IN}:{OUT}", "--tokens", "4096", "--source", str(corpus),
                 "--context-len", "64"]) == 0, capsys.readouterr().err
    store = ResultsStore(ws / "saelab.duckdb")
    assert set(store.select("cached_sites")["site"]) == {IN, OUT}  # the pair caches both of its sites
    assert main(["train", *common, "--arch", "transcoder,skip_transcoder", "--sites", f"{IN}:{OUT}",
                 "--width", "64", "--k", "8", "--tokens", "2048", "--batch-size", "256"]) == 0, capsys.readouterr().err
    assert "cached activations" in store.runs().query("kind == 'train'")["message"].iloc[0]
    saes = store.select("saes", order_by=["sae_id"])
    assert list(saes["output_site"]) == [OUT, OUT] and list(saes["site"]) == [IN, IN]
    assert list(saes["d_out"]) == [random_d_model(ws, saes)] * 2
    skip_id = next(s for s in saes["sae_id"] if "-topk-skip-" in s)
    tc = load_sae(ws / saes.set_index("sae_id").loc[skip_id, "path"])
    assert tc.cfg.is_transcoder and tc.cfg.skip_connection and tc.W_skip.shape == (tc.cfg.d_in, tc.cfg.d_target)
    capsys.readouterr()
    assert main(["eval", *common, "--sae", str(ws / "saes" / skip_id), "--tokens", "1024",
                 "--context-len", "64"]) == 0, capsys.readouterr().err
    metrics = store.select("eval_metrics", where={"sae_id": skip_id})
    assert {"fvu", "ce_spliced", "ce_loss_score", "ce_with_error"} <= set(metrics["metric"])


def random_d_model(ws, saes) -> int:
    return int(load_sae(ws / saes["path"].iloc[0]).cfg.d_in)  # resid_mid and mlp_out are both d_model wide


def test_the_write_back_of_the_output_site_is_the_mlp_out_hook(random_model):
    assert HookSite.parse(OUT).hook_name == "blocks.1.hook_mlp_out" and flat_acts is not None


def test_dashboard_logit_effects_go_through_the_output_site(random_model, tokens):
    """A transcoder from resid_mid to the MLP neurons (mlp_post): its decoder directions reach the residual
    stream through W_out, not as they are (as they would at its input site)."""
    from saelab.evals.features import DashboardConfig, compute_dashboards, unembed_directions

    model = random_model
    tc = SAE(SAEConfig("topk", model.cfg.d_model, 32, k=4, d_out=model.cfg.d_mlp, hook_site=IN,
                       output_site="1.mlp_post"))
    dash = compute_dashboards(model, tc, tokens, DashboardConfig(n_logits=3, batch_size=2))
    with torch.no_grad():
        expected = unembed_directions(model, tc.W_dec @ model.blocks[1].mlp.W_out).topk(3, dim=1)
    torch.testing.assert_close(dash.logits.top_values, expected.values)
