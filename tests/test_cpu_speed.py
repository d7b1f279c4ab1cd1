"""The race's CPU speed settings change nothing they compute: the loss's one-pass backward, malloc, denormals."""

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from hyperclone.training.cpu_speed import denormals_flushed
from hyperclone.training import next_token_loss
from hyperclone.training.loop import loss_on
from hyperclone.training.next_token_loss import (HeadCrossEntropy, MeanCrossEntropy, head_cross_entropy, mean_cross_entropy,
                                                 plain_head)

EPS32 = torch.finfo(torch.float32).eps


def test_mean_cross_entropy_is_the_cross_entropy_to_float_rounding():
    n, vocab = 512, 2048
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(n, vocab, generator=gen) * 3).requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=gen)
    exact = logits.detach().double().requires_grad_()
    reference = F.cross_entropy(exact, targets)
    reference.backward()

    loss = mean_cross_entropy(logits, targets)
    loss.backward()
    # A log-sum-exp over V terms of size up to max|z| rounds to about eps * log2(V) * (max|z| + ln V); x4 slack.
    tol = 4 * EPS32 * math.log2(vocab) * (logits.abs().max().item() + math.log(vocab))
    assert abs(loss.item() - reference.item()) <= tol
    # The gradient is (softmax - onehot) / n: the same error, per row, scaled by 1/n. A missing -1 or a
    # wrong scale is off by 1/n, thousands of times this tolerance.
    assert (logits.grad.double() - exact.grad).abs().max().item() <= tol / n


def test_mean_cross_entropy_backward_is_the_derivative_of_its_forward():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 11, dtype=torch.float64, generator=gen).requires_grad_()
    targets = torch.randint(0, 11, (6,), generator=gen)
    assert torch.autograd.gradcheck(lambda z: MeanCrossEntropy.apply(z, targets), (logits,))


def test_head_cross_entropy_is_the_cross_entropy_of_the_heads_logits_to_float_rounding():
    n, d, vocab = 600, 64, 2048  # 600 rows: two whole chunks and a part
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(n, d, generator=gen).requires_grad_()
    weight = (torch.randn(vocab, d, generator=gen) * 0.3).requires_grad_()
    bias = torch.randn(vocab, generator=gen).requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=gen)
    exact = [t.detach().double().requires_grad_() for t in (hidden, weight, bias)]
    reference = F.cross_entropy(F.linear(*exact), targets)
    reference.backward()

    loss = head_cross_entropy(hidden, weight, bias, targets)
    loss.backward()
    # The logits are sums of d products: rounding about eps * d * max|h| * max|w| each (x4 slack); then the
    # log-sum-exp's rounding as in the test above. The softmax's error is relative to that of the logits, so
    # each gradient is right to that relative error of its largest entry; a wrong scale, a missing -1 or a
    # chunk counted twice is off by its whole size.
    z_max = F.linear(*exact).abs().max().item()
    logit_err = 4 * EPS32 * d * hidden.abs().max().item() * weight.abs().max().item()
    tol = logit_err + 4 * EPS32 * math.log2(vocab) * (z_max + math.log(vocab))
    assert abs(loss.item() - reference.item()) <= tol
    for got, want in zip((hidden, weight, bias), exact):
        assert (got.grad.double() - want.grad).abs().max().item() <= 4 * tol * want.grad.abs().max().item()


def test_head_cross_entropy_backward_is_the_derivative_of_its_forward(monkeypatch):
    monkeypatch.setattr(next_token_loss, "CHUNK_ROWS", 4)  # 6 rows: two chunks
    gen = torch.Generator().manual_seed(3)
    hidden, weight, bias = (torch.randn(*shape, dtype=torch.float64, generator=gen).requires_grad_()
                            for shape in ((6, 5), (11, 5), (11,)))
    targets = torch.randint(0, 11, (6,), generator=gen)
    assert torch.autograd.gradcheck(lambda h, w, b: HeadCrossEntropy.apply(h, w, b, targets), (hidden, weight, bias))


def tiny_gpt2(seed: int = 0, head_bias: bool = False):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=300,
                                       bos_token_id=0, eos_token_id=0, tie_word_embeddings=False))
    if head_bias:  # as Phi's head has
        model.lm_head = torch.nn.Linear(32, 300, bias=True)
    return model


class DoubledLogits(torch.nn.Module):
    """A model whose logits are not its head's output (as with a logit scale or soft-capping)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        out.logits = out.logits * 2
        return out

    def get_output_embeddings(self):
        return self.inner.lm_head

    @property
    def base_model(self):
        return self.inner.transformer


def logits_path_loss(model, x, y):
    return mean_cross_entropy(model(input_ids=x, use_cache=False).logits.float().flatten(0, 1), y.flatten())


@pytest.mark.parametrize("head_bias", [False, True])
def test_loss_on_takes_the_heads_path_where_the_logits_are_the_heads_and_computes_the_same(head_bias):
    model = tiny_gpt2(head_bias=head_bias)
    tokens = torch.randint(0, 300, (12, 33), generator=torch.Generator().manual_seed(4))
    x, y = tokens[:, :-1], tokens[:, 1:]  # 384 rows: two chunks of the head's path
    assert plain_head(model, x) is model.lm_head
    model.eval()  # no dropout: both paths see the same network
    losses, grads = [], []
    for loss_fn in (loss_on, logits_path_loss):
        loss = loss_fn(model, x, y)
        loss.backward()
        losses.append(loss.item())
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
        model.zero_grad(set_to_none=True)
    # Both are float32 sums of the same terms in another order: rounding of a few eps of the loss's size; each
    # gradient entry sums at most n = 384 rows (or the 300 vocabulary terms), so it moves by at most about
    # n * eps of its largest entry.
    assert abs(losses[0] - losses[1]) <= 64 * EPS32 * losses[1]
    for name, want in grads[1].items():
        assert (grads[0][name] - want).abs().max() <= len(y.flatten()) * EPS32 * want.abs().max(), name


def test_loss_on_keeps_the_logits_path_for_a_model_whose_logits_are_not_its_heads():
    model = DoubledLogits(tiny_gpt2()).eval()
    tokens = torch.randint(0, 300, (2, 17), generator=torch.Generator().manual_seed(5))
    x, y = tokens[:, :-1], tokens[:, 1:]
    assert plain_head(model, x) is None
    assert loss_on(model, x, y).item() == pytest.approx(logits_path_loss(model, x, y).item(), rel=1e-6)
    assert loss_on(model, x, y).item() != pytest.approx(logits_path_loss(model.inner, x, y).item(), rel=1e-3)


class Wrapped(torch.nn.Module):
    """A wrapper without the model's methods, as DDP's: its forward must run (it hooks the gradients' all-reduce)."""

    def __init__(self, model):
        super().__init__()
        self.module = model

    def forward(self, **kwargs):
        return self.module(**kwargs)


def test_loss_on_runs_a_wrappers_own_forward():
    model = tiny_gpt2().eval()
    wrapped = Wrapped(model)
    tokens = torch.randint(0, 300, (2, 17), generator=torch.Generator().manual_seed(8))
    x, y = tokens[:, :-1], tokens[:, 1:]
    assert plain_head(wrapped, x) is None
    assert loss_on(wrapped, x, y).item() == pytest.approx(logits_path_loss(model, x, y).item(), rel=1e-6)


def test_the_heads_check_keeps_the_models_mode_and_random_stream():
    model = tiny_gpt2(seed=1).train()
    x = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(6))
    torch.manual_seed(7)
    assert next_token_loss.logits_are_head_output(model, model.lm_head, x)
    after_check = torch.rand(1)
    torch.manual_seed(7)
    assert model.training and torch.equal(after_check, torch.rand(1))


FAULTS_SCRIPT = """
import ctypes, ctypes.util, resource, torch
from hyperclone.training.cpu_speed import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, keep_freed_memory

def faults_per_page(rounds, blocks=3, mib=16):
    # page faults per touched 4 KiB page when a step's worth of large tensors is allocated and freed again
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        held = [torch.empty(mib * 1024 * 1024 // 4).fill_(1.0) for _ in range(blocks)]
        del held
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (rounds * blocks * mib * 256)

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)  # glibc's defaults: large blocks go back to the kernel
libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
faults_per_page(1)
default = faults_per_page(8)
kept = keep_freed_memory()
faults_per_page(4)  # the heap grows to hold a step's blocks (over a round or two)
print(default, kept, faults_per_page(8))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keep_freed_memory_stops_the_steps_large_tensors_faulting_in_fresh_pages():
    # A fresh process: in this one, earlier tests' freed heap would serve the blocks whatever the thresholds.
    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    default, kept, after = out.stdout.split()
    assert float(default) > 0.5  # the measurement sees the faults it is about
    assert kept == "True" and float(after) < 0.05


def test_denormals_are_flushed_inside_the_block_only():
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # a float32 subnormal
    assert (tiny * 1.0).item() > 0
    with denormals_flushed(torch.device("cpu")):
        if not torch.set_flush_denormal(True):
            pytest.skip("this CPU cannot flush denormals")
        assert (tiny * 1.0).item() == 0.0
    assert (tiny * 1.0).item() > 0
    with denormals_flushed(torch.device("meta")):  # not a CPU: nothing changes
        assert (tiny * 1.0).item() > 0
