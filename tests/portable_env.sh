#!/usr/bin/env bash
# Prints the environment under which `make test-portable` re-runs the notebooks: the numerics of a kind
# of CPU other than this one. Training amplifies last-bit differences between CPU kernels, so a notebook
# whose saved outputs pass nbval under it compares only what every machine reproduces.
#
# On a CPU with AVX-512 (most Intel Xeons, recent AMD EPYCs): compute as an AVX2 machine without
# bfloat16 instructions (a laptop, an older AMD EPYC): PyTorch's AVX2 kernels (softmax, norms, element-wise),
# MKL's AVX2 matrix products, and oneDNN without AVX-512/AMX, which also makes bfloat16 matmuls as slow as
# they are there (emulated). Checked: each changes the bits of a GPT's logits and gradients here.
# On an AVX2-only CPU: compute as one without AVX (PyTorch's scalar kernels, MKL's SSE4.2 path).
# Elsewhere (Apple, ARM): PyTorch's scalar kernels.
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  echo "ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 DNNL_MAX_CPU_ISA=AVX2"
elif grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
  echo "ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 DNNL_MAX_CPU_ISA=SSE41"
else
  echo "ATEN_CPU_CAPABILITY=default"
fi
