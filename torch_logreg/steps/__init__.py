"""Steps: one batch's objective and gradient, ``step(X, T, l2) -> (objective, grads)``.

``base.py`` declares the interface every step has (the call and its optional capabilities).
``reference.py`` is the model's own manual backward and the definition every other step is
pinned to; ``feature_major.py`` (full batch, class-major logits), ``blocked.py`` (full batch in row
blocks, each read from memory once) and ``batch.py`` (mini-batches in buffers made once) are the
same maths in faster layouts; ``fused_cpu.py`` (numba) and
``fused_triton.py`` (CUDA) read X once per step; ``cuda_graph.py`` wraps a step and the update in
one CUDA graph; ``sparse.py`` is the step on sparse CSR X. ``select.py`` is the one place that chooses
among them.
"""
