"""The parts of the GPU device check (``bench/gpu_check.py``): its table, its inputs and its rows."""
