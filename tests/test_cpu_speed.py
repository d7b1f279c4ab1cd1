"""The race's CPU speed settings change nothing they compute: the loss's one-pass backward, malloc, denormals."""

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from hyperclone.training.cpu_speed import denormals_flushed
from hyperclone.training.next_token_loss import MeanCrossEntropy, mean_cross_entropy

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
