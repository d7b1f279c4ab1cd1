"""The training loss, mean next-token cross-entropy, computed with few passes over the logits.

``F.cross_entropy`` keeps a log-softmax of the logits for its backward pass and then walks the logits'
size three more times (a zero-filled gradient for the picked entries, then the log-softmax's backward).
For a small model with a 2048-token vocabulary those passes over ``[tokens, vocabulary]`` are a fifth of a
CPU training step. Two functions here compute the same mean cross-entropy, with its gradient
``(softmax(z) - onehot(target)) / n`` worked out in the forward pass, where the logits ``z`` are at hand
(``softmax_minus_onehot_``: one softmax and one subtraction per row, in place):

- ``mean_cross_entropy(logits, targets)``: from logits a model has computed.
- ``head_cross_entropy(hidden, weight, bias, targets)``: from the final hidden states and the LM head, for a
  model whose logits are exactly ``hidden @ weight.T + bias``. It works through ``CHUNK_ROWS`` rows at a time,
  so the logits never exist whole: each chunk's logits and their gradient stay in the core's cache while
  they give their share of the gradients of the hidden states, the head and its bias.
  ``loss_on`` (``loop.py``) takes this path on the CPU where ``plain_head`` finds the model's logits to be
  its head's output.

Values agree with ``F.cross_entropy`` to float rounding (``tests/test_cpu_speed.py``); every target must
be a token id (no ``ignore_index``). Speed: ``benchmarks/results/micro_step_speed.txt``.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

CHUNK_ROWS = 256  # logits rows per chunk: 256 x 2048 floats (2 MiB) fit a core's L2 cache (micro_step_speed.txt)


def softmax_minus_onehot_(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Overwrite ``logits [n, V]`` with ``softmax(logits) - onehot(targets)``; return each row's cross-entropy."""
    picked = logits.gather(1, targets[:, None]).squeeze(1)
    top = logits.amax(1, keepdim=True)
    logits.sub_(top).exp_()
    sums = logits.sum(1, keepdim=True)
    losses = top.squeeze(1) + sums.squeeze(1).log() - picked
    logits.div_(sums)
    logits[torch.arange(len(targets), device=logits.device), targets] -= 1
    return losses


class MeanCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``logits [n, V]`` against ``targets [n]``; see the module's text."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not ctx.needs_input_grad[0]:
            return (torch.logsumexp(logits, dim=1) - logits.gather(1, targets[:, None]).squeeze(1)).mean()
        grad = logits.detach().clone()
        losses = softmax_minus_onehot_(grad, targets)
        ctx.save_for_backward(grad.div_(len(targets)))
        return losses.mean()

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None]:
        (grad,) = ctx.saved_tensors
        return grad * grad_loss, None


def mean_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``logits [n, V]`` (float) against token ids ``targets [n]``."""
    return MeanCrossEntropy.apply(logits, targets)


class HeadCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ weight.T + bias`` against ``targets``, chunk by chunk; see the module's text."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor) -> torch.Tensor:
        n = len(targets)
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        grad_bias = torch.zeros_like(bias) if need_bias else None
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)
        for start in range(0, n, CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            logits = F.linear(hidden[rows], weight, bias)
            total += softmax_minus_onehot_(logits, targets[rows]).sum(dtype=torch.float64)
            if grad_hidden is not None:
                torch.mm(logits, weight, out=grad_hidden[rows])
            if grad_weight is not None:
                grad_weight.addmm_(logits.T, hidden[rows])
            if grad_bias is not None:
                grad_bias += logits.sum(0)
        ctx.save_for_backward(*(g.div_(n) if g is not None else None for g in (grad_hidden, grad_weight, grad_bias)))
        return (total / n).to(hidden.dtype)

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (*(g * grad_loss if g is not None else None for g in ctx.saved_tensors), None)


def head_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the logits ``hidden [n, d] @ weight [V, d].T + bias [V]`` against ``targets [n]``."""
    return HeadCrossEntropy.apply(hidden, weight, bias, targets)


_PLAIN_HEADS: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def logits_are_head_output(model: torch.nn.Module, head: torch.nn.Linear, input_ids: torch.Tensor) -> bool:
    """Whether ``model``'s logits on ``input_ids`` are exactly ``head`` applied to its base model's output.

    False for a model that scales or caps its logits (or has no separate base model). Run in eval mode (no
    dropout, so no random numbers are drawn) on the first row; the tolerance is float32 rounding.
    """
    if getattr(model, "base_model", model) is model:
        return False
    was_training = model.training
    model.eval()
    try:
        row = input_ids[:1]
        logits = model(input_ids=row, use_cache=False).logits.float()
        direct = head(model.base_model(input_ids=row, use_cache=False).last_hidden_state).float()
    except (AttributeError, TypeError, ValueError):
        return False
    finally:
        model.train(was_training)
    tolerance = 16 * torch.finfo(torch.float32).eps * (1 + float(logits.abs().max()))
    return logits.shape == direct.shape and float((logits - direct).abs().max()) <= tolerance


def plain_head(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.nn.Linear | None:
    """The LM head to compute ``model``'s loss with ``head_cross_entropy``, or None for the logits' path.

    Only in float32 on the CPU, where the chunks stay in cache (elsewhere the logits' path is as fast), and
    only for the model itself: a wrapper (DDP's, in a data-parallel race) must run its own forward, where it
    hooks the gradients' all-reduce. Each model is checked once (``logits_are_head_output``).
    """
    output_embeddings = getattr(model, "get_output_embeddings", None)  # None for a wrapper such as DDP's
    if output_embeddings is None or input_ids.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        return None
    head = output_embeddings()
    if not isinstance(head, torch.nn.Linear) or head.weight.dtype != torch.float32:
        return None
    if model not in _PLAIN_HEADS:
        _PLAIN_HEADS[model] = logits_are_head_output(model, head, input_ids)
    return head if _PLAIN_HEADS[model] else None
