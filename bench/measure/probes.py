"""The install check's computations on a device: each really runs, checks its answer against a
reference within a stated bound, and says what it computed (or raises CheckFailure with a hint)."""

from __future__ import annotations

from bench.core.errors import CheckFailure
from bench.core.units import fmt_flops
from bench.env.check import Probes

MATMUL_SIZE = 512
FP32_BOUND = 1e-5  # relative Frobenius error of a 512x512 float32 matmul against float64: ~1e-7 typical
TF32_BOUND = 5e-3  # with TF32 or reduced-precision matmul allowed: ~5e-4 typical


# The oldest Linux driver each CUDA release's toolkit documents (CUDA Toolkit release notes, "CUDA Toolkit
# and Corresponding Driver Versions", GA releases, Linux x86_64).
def matmul_check(device: str) -> str:
    """A float32 matmul on `device` against a float64 reference on the CPU, within a stated bound."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.rand(MATMUL_SIZE, MATMUL_SIZE, generator=generator, dtype=torch.float64) * 2 - 1
    b = torch.rand(MATMUL_SIZE, MATMUL_SIZE, generator=generator, dtype=torch.float64) * 2 - 1
    reference = a @ b
    result = (a.float().to(device) @ b.float().to(device)).cpu().double()
    error = float((result - reference).norm() / reference.norm())
    reduced = device.startswith("cuda") and (
        torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    )
    bound = TF32_BOUND if reduced else FP32_BOUND
    mode = "TF32 allowed" if reduced else "full float32"
    detail = f"{MATMUL_SIZE}x{MATMUL_SIZE} float32 vs float64: relative error {error:.1e} (bound {bound:.0e}, {mode})"
    if not error <= bound:  # also catches NaN
        raise CheckFailure(
            detail, "wrong results from this device's BLAS: check the driver and the torch build"
        )
    return detail


def autograd_check(device: str) -> str:
    """One forward/backward of the chapter's MLP: gradients match a float64 CPU reference, SGD lowers the loss."""
    import torch

    from bench.measure.model import build_training

    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(64, 784, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    reference = build_training("cpu", seed=3)
    reference.net.double()
    loss_ref = reference.criterion(reference.net(inputs.double()), labels)
    loss_ref.backward()
    training = build_training(device, seed=3)
    x, y = inputs.to(device), labels.to(device)
    loss = training.criterion(training.net(x), y)
    loss.backward()
    worst = 0.0
    for (name, param), param_ref in zip(
        training.net.named_parameters(), reference.net.parameters(), strict=True
    ):
        if param.grad is None or param_ref.grad is None:
            raise CheckFailure(f"no gradient reached {name}", "autograd is broken in this install")
        grad, grad_ref = param.grad.detach().cpu().double(), param_ref.grad
        if not torch.isfinite(grad).all():
            raise CheckFailure(f"gradient of {name} is not finite", "the device computes wrong results")
        worst = max(worst, float((grad - grad_ref).norm() / grad_ref.norm().clamp_min(1e-12)))
    bound = TF32_BOUND if device.startswith("cuda") else 1e-4
    if not worst <= bound:
        raise CheckFailure(
            f"gradients differ from the float64 reference by {worst:.1e} (bound {bound:.0e})",
            "wrong results from autograd on this device: check the driver and the torch build",
        )
    first = float(loss.detach())
    for _ in range(5):
        training.step(x, y)
    with torch.no_grad():
        last = float(training.criterion(training.net(x), y))
    if not last < first:
        raise CheckFailure(
            f"5 SGD steps did not lower the loss ({first:.4f} -> {last:.4f})", "optimizer is broken"
        )
    return f"MLP gradients within {worst:.1e} of float64 (bound {bound:.0e}); 5 SGD steps: loss {first:.3f} -> {last:.3f}"


def nms_check(device: str) -> str:
    """torchvision's compiled `nms` on three boxes: catches a torch/torchvision mismatch."""
    import torch
    import torchvision

    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32, device=device
    )
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    keep = torchvision.ops.nms(boxes, scores, iou_threshold=0.5).cpu().tolist()
    if keep != [0, 2]:
        raise CheckFailure(
            f"nms kept {keep}, expected [0, 2]", "torchvision's compiled ops compute wrong results"
        )
    return "torchvision.ops.nms on 3 boxes kept [0, 2] as expected"


def peak_text(device: str) -> str:
    """`float32 110 GFLOP/s (1024² matmul), ...; per-op floor 1.1 µs`: measured now, in about a second.
    A GPU's peaks read in TFLOP/s (`tfloat32 410 TFLOP/s`), as the run's header shows them."""
    from bench.measure.efficiency import measure_peaks

    names = ("float32", "tfloat32") if device.startswith("cuda") else ("float32",)
    peaks = measure_peaks(device, names)
    parts = [f"{name} {fmt_flops(peaks.flops(name))} ({peaks.side(name)}² matmul)" for name in names]
    return f"{', '.join(parts)}; per-op floor {(peaks.op_floor_s or 0) * 1e6:.2g} µs"


PROBES = Probes(matmul=matmul_check, autograd=autograd_check, torchvision_ops=nms_check, peak=peak_text)
