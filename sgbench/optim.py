"""Adam as torch computes it, with a CPU step that keeps its arrays in the cache (issue #26 item 3).

torch.optim.Adam's default step on a CPU (its single-tensor path) makes seven passes over each
parameter tensor (lerp_, mul_, addcmul_, sqrt, div, add_, addcdiv_), and on the paper's FCN-3 with
2×1024 SG models (5.07M parameters) each pass streams arrays of tens of megabytes from memory: about a
fifth of a DNI step. `update` runs the same seven operations in the same order on slices of `CHUNK`
elements, so a slice's four arrays stay in the cache across the seven. Every element sees the same
arithmetic, so the numbers are torch's, bit for bit (tests/test_optim.py), in about a third to a half
of the time on millions of parameters. `Adam` is torch.optim.Adam with that step wherever it applies;
anywhere else (a GPU, amsgrad, weight decay, maximize, foreach / fused / capturable / differentiable,
a tensor learning rate, complex parameters) it is torch's own step.
"""
from __future__ import annotations

import torch

# Elements per slice: four float32 slices of 1 MiB each (parameter, gradient, both moments) stay in a
# CPU's cache between the passes; a multiple of every SIMD width, so each slice is split into vectors
# exactly as the whole tensor is (the same instructions on every element).
CHUNK = 1 << 18


def update(param: torch.Tensor, grad: torch.Tensor, state: dict, lr: float, beta1: float, beta2: float,
           eps: float) -> None:
    """One Adam update of `param` in place, with its state (step, exp_avg, exp_avg_sq): torch's
    single-tensor arithmetic (torch.optim.adam._single_tensor_adam with its default options), slice by
    slice where the four tensors are contiguous, whole otherwise. Call it under torch.no_grad()."""
    state["step"] += 1
    step = state["step"].item()
    bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
    step_size = lr / (1 - beta1 ** step)
    tensors = (param, grad, state["exp_avg"], state["exp_avg_sq"])
    slices = [tensors]
    if param.numel() > CHUNK and all(t.is_contiguous() for t in tensors):
        flat = [t.view(-1) for t in tensors]
        slices = [[t[i:i + CHUNK] for t in flat] for i in range(0, param.numel(), CHUNK)]
    for p, g, m, v in slices:
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
        p.addcdiv_(m, denom, value=-step_size)


class Adam(torch.optim.Adam):
    """torch.optim.Adam (its state dict, hooks and options unchanged) whose step runs `update` on a CPU
    with the default options: the same numbers, less memory traffic. Parameters without a gradient are
    skipped, as torch skips them."""

    def _chunkable(self) -> bool:
        return all(not g["amsgrad"] and g["weight_decay"] == 0 and not g["maximize"] and not g["capturable"]
                   and not g["differentiable"] and not g["foreach"] and not g["fused"]
                   and not g.get("decoupled_weight_decay") and isinstance(g["lr"], float)
                   and all(isinstance(b, float) for b in g["betas"])
                   and all(p.device.type == "cpu" and not torch.is_complex(p) for p in g["params"])
                   for g in self.param_groups)

    def step(self, closure=None):
        if not self._chunkable():
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    if p.grad.is_sparse:
                        raise RuntimeError("Adam does not support sparse gradients")
                    state = self.state[p]
                    if not state:  # as torch's _init_group: a float32 step count (float64 under that default)
                        dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
                        state["step"] = torch.tensor(0.0, dtype=dtype)
                        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    update(p, p.grad, state, group["lr"], beta1, beta2, group["eps"])
        return loss
