#!/usr/bin/env bash
# GPU proof, for a machine with an NVIDIA GPU (run from the repository root):
# installs the platform with diffusers and a CUDA build of torch, then runs bench/image.py
# with the tiny pipeline app on the node's GPU type in fp16, against the same pipeline
# called directly on the same GPU. Prints the GPU, Ray's accelerator type and the table.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -m pip install -q '.[test]' diffusers transformers 'torch>=2.4'
python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
# Ray names the accelerator from the GPU's model (H100, A100, L4, ...): that is the fal machine type.
accelerator=$(python - <<'PY'
from ray._private.accelerators import NvidiaGPUAcceleratorManager as gpus
print(gpus.get_current_node_accelerator_type())
PY
)
echo "Ray accelerator type: ${accelerator}"
TINY_DIFFUSION_MACHINE="GPU-${accelerator}" python bench/image.py --device cuda --size "${SIZE:-512}" --rounds "${ROUNDS:-10}"
