"""One prepared GPU check: a CUDA model under load while the NVML sampler records.

Run on a machine with an NVIDIA GPU (e.g. a lent device machine):

    python benchmarks/gpu_nvml_check.py [--seconds 20] [--batch 256] [--out DIR]

It builds the digits CNN (cached), moves it to CUDA, runs batched inference for the given
time while `harness.telemetry.GpuSampler` samples every 100 ms, and prints: the GPU seen by
NVML, inferences/s, mean utilisation, peak memory, mean power, energy over the run (from the
energy counter) and energy per inference. The time series is written as parquet to DIR.
Without a GPU it says why and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.telemetry import GpuSampler, gpu_inventory  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("results/gpu-check"))
    args = parser.parse_args()
    gpus, reason = gpu_inventory()
    if not gpus:
        print(f"no GPU for the NVML check: {reason}")
        return 2
    import torch

    from harness.models import build_model
    from harness.models.digits_cnn import DigitsCnnConfig

    if not torch.cuda.is_available():
        print("NVML sees a GPU but torch has no CUDA: install a CUDA build of torch")
        return 2
    bundle = build_model(DigitsCnnConfig(name="digits-cnn"))
    model = bundle.module.to("cuda").eval()
    x = torch.from_numpy(bundle.x_test).to("cuda")
    x = x.repeat((args.batch + len(x) - 1) // len(x), 1, 1, 1)[: args.batch].contiguous()
    sampler = GpuSampler(interval_s=0.1)
    inferences = 0
    with torch.inference_mode():
        for _ in range(20):  # warm-up: kernels chosen, memory allocated
            model(x)
        torch.cuda.synchronize()
        sampler.start()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            for _ in range(50):
                model(x)
            torch.cuda.synchronize()
            inferences += 50 * args.batch
        elapsed = time.perf_counter() - t0
    frame = sampler.stop()
    figures = sampler.summary(frame, inferences, elapsed)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(args.out / "gpu-timeseries.parquet", index=False)
    result = {
        "gpu": gpus[0], "seconds": elapsed, "batch": args.batch, "samples": len(frame),
        "inferences_per_s": inferences / elapsed, **figures,
        "max_sm_clock_mhz": float(frame.sm_clock_mhz.max()),
        "throttle_reasons_seen": sorted({int(v) for v in frame.throttle_reasons}),
    }  # fmt: skip
    (args.out / "gpu-check.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
