"""The learning-rate schedule and the proximal gene-L1 step (models.genes.training.StepRule)."""
import numpy as np
import pytest
import torch

from models.genes.training import StepRule, fit_predict, prox_l1_
from models.simulate.exome import exome_cohort


def test_cosine_schedule_closed_form():
    r = StepRule(lr=0.01, total_steps=100, schedule="cosine")
    assert r.lr_at(0) == pytest.approx(0.01)
    assert r.lr_at(50) == pytest.approx(0.005)
    assert r.lr_at(100) == pytest.approx(0.0, abs=1e-15)
    assert StepRule(lr=0.01, total_steps=10).lr_at(7) == 0.01
    with pytest.raises(ValueError, match="lr_schedule"):
        StepRule(lr=0.01, total_steps=10, schedule="step")


def test_prox_is_soft_threshold_in_adam_metric():
    """One Adam step then the proximal step: each weight is soft-thresholded by
    lr * lam / (sqrt(v_hat) + eps), computed here by hand."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(50) * 0.02)
    opt = torch.optim.Adam([w], lr=0.01)
    g = torch.randn(50)
    w.grad = g.clone()
    opt.step()
    before = w.detach().clone()
    v_hat = (1 - 0.999) * g ** 2 / (1 - 0.999)
    thr = 0.01 * 0.003 / (v_hat.sqrt() + 1e-8)
    expect = before.sign() * (before.abs() - thr).clamp(min=0)
    prox_l1_(opt, [w], 0.003, 0.01)
    assert torch.allclose(w.detach(), expect, atol=1e-7)
    assert int((w == 0).sum()) == int((before.abs() <= thr).sum()) > 0


@pytest.fixture(scope="module")
def small():
    ex = exome_cohort(500, 400, seed=3)
    return ex, np.arange(350), np.arange(350, 500)


@pytest.mark.parametrize("over", [{"lr_schedule": "cosine"}, {"l1_prox": True, "gene_l1": 0.003}])
def test_both_loops_identical_and_prox_gives_exact_zeros(small, over):
    ex, tr, te = small
    out = {}
    for loop in ("torch", "lightning"):
        p, info = fit_predict("logreg", ex.X[tr], ex.y[tr], ex.X[te], n_classes=16,
                              gene_pathways=ex.gene_pathways, params=dict(over),
                              train={"max_epochs": 4, "device": "cpu", "loop": loop}, return_model=True)
        out[loop] = (p, info["model"].l1_weight().detach().clone())
    assert np.allclose(out["torch"][0], out["lightning"][0], atol=1e-6)
    assert torch.allclose(out["torch"][1], out["lightning"][1], atol=1e-6)
    zeros = int((out["torch"][1] == 0).sum())
    if over.get("l1_prox"):
        assert zeros > 0          # the loss-term penalty under Adam leaves no weight at exactly 0
    p0, info0 = fit_predict("logreg", ex.X[tr], ex.y[tr], ex.X[te], n_classes=16,
                            gene_pathways=ex.gene_pathways, params={"gene_l1": 0.003},
                            train={"max_epochs": 4, "device": "cpu"}, return_model=True)
    assert int((info0["model"].l1_weight() == 0).sum()) == 0
    assert not np.allclose(p0, out["torch"][0])


def test_schema_refuses_unknown_schedule_in_one_line():
    from models.registry import validate_model
    from pipelines.errors import EpiflowError

    name, cfg = validate_model("logreg", {"type": "logreg", "lr_schedule": "cosine", "l1_prox": True})
    assert cfg["lr_schedule"] == "cosine" and cfg["l1_prox"] is True
    with pytest.raises(EpiflowError) as e:
        validate_model("logreg", {"type": "logreg", "lr_schedule": "linear"})
    assert "lr_schedule" in str(e.value) and "\n" not in str(e.value)
