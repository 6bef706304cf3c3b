"""DSP design (coefficients, knob curves: control thread) and the compiled
per-sample kernels the render path calls (audio thread)."""
