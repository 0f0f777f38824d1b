"""Where a LeNet-5 training step of experiment=lenet5_fast spends its CPU time (torch.profiler).

    OMP_NUM_THREADS=1 python scripts/profile_cpu_step.py [bf16] [cl]

One batch of 512 MNIST-sized images (the batch of the profile in docs/benchmarks.md), batch norm,
SGD with nesterov momentum, label smoothing 0.1 (a lenet5_fast step without data loading): 5
warm-up steps, then 20 profiled; prints the operators by self CPU time. `bf16`: autocast to
bfloat16; `cl`: channels_last weights and inputs. The shares are what to read on a busy
machine; absolute times need a quiet one.
"""

import contextlib
import sys

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from classic_cnns.models import LeNet5
from classic_cnns.models.layers import LayerChoices

torch.manual_seed(0)
x, y = torch.randn(512, 1, 28, 28), torch.randint(0, 10, (512,))
net = LeNet5(layers=LayerChoices(norm="batch"))
if "cl" in sys.argv:
    net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


def step() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in sys.argv else contextlib.nullcontext():
        loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


for _ in range(5):
    step()
with profile(activities=[ProfilerActivity.CPU]) as profiler:
    for _ in range(20):
        step()
print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
